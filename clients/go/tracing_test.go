package jobwire_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
	"github.com/jobwire/jobwire/clients/go/internal/testbroker"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// waitForSpan polls the in-memory exporter for a span that match accepts.
// Spans end just after the outcome is reported, so they can trail the job's
// state by a moment.
func waitForSpan(t *testing.T, what string, match func(tracetest.SpanStub) bool) tracetest.SpanStub {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		for _, s := range spans.GetSpans() {
			if match(s) {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s span after %v", what, waitTimeout)
		}
		time.Sleep(pollInterval)
	}
}

func attrOf(s tracetest.SpanStub, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// consumerSpanOf matches the consumer span of one attempt. The queue is
// part of the match because job ids repeat across the databases of the
// brokers that some tests start for themselves, and all spans go to one
// exporter.
func consumerSpanOf(queue, jobID string, attempt int) func(tracetest.SpanStub) bool {
	return func(s tracetest.SpanStub) bool {
		if s.SpanKind != trace.SpanKindConsumer {
			return false
		}
		q, _ := attrOf(s, "messaging.destination.name")
		id, _ := attrOf(s, "messaging.message.id")
		a, _ := attrOf(s, "jobwire.job.attempt")
		return q.AsString() == queue && id.AsString() == jobID && a.AsInt64() == int64(attempt)
	}
}

func wantAttrs(t *testing.T, s tracetest.SpanStub, want map[string]any) {
	t.Helper()
	for key, w := range want {
		v, ok := attrOf(s, key)
		if !ok {
			t.Errorf("span %q has no attribute %s", s.Name, key)
			continue
		}
		if got := v.AsInterface(); fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("span %q attribute %s = %v, want %v", s.Name, key, got, w)
		}
	}
}

func TestTracing_ConsumerSpanIsChildOfProducerSpan(t *testing.T) {
	t.Parallel()
	env := setup(t, "tracing")
	env.startWorker(jobwire.WorkerConfig{}, func(w *jobwire.Worker) {
		w.Handle("traced", func(ctx context.Context, job *jobwire.Job) error {
			if job.Attempt == 1 {
				return errors.New("first attempt fails")
			}
			return nil
		})
	})

	ctx, root := otel.Tracer("test").Start(env.ctx, "checkout")
	res, err := env.client.EnqueueJSON(ctx, env.queue, "traced", struct{}{}, jobwire.WithRetry(50*time.Millisecond, 0, 0))
	root.End()
	if err != nil {
		t.Fatal(err)
	}
	env.waitForState(res.JobID, stateCompleted)

	producer := waitForSpan(t, "producer", func(s tracetest.SpanStub) bool {
		id, _ := attrOf(s, "messaging.message.id")
		q, _ := attrOf(s, "messaging.destination.name")
		return s.SpanKind == trace.SpanKindProducer && id.AsString() == res.JobID && q.AsString() == env.queue
	})
	if producer.Name != "send "+env.queue {
		t.Errorf("producer span name = %q, want %q", producer.Name, "send "+env.queue)
	}
	if producer.Parent.SpanID() != root.SpanContext().SpanID() {
		t.Error("the producer span is not a child of the caller's span")
	}
	wantAttrs(t, producer, map[string]any{
		"messaging.system":           "jobwire",
		"messaging.destination.name": env.queue,
	})

	for attempt, outcome := range map[int]string{1: "retry", 2: "completed"} {
		consumer := waitForSpan(t, fmt.Sprintf("consumer (attempt %d)", attempt), consumerSpanOf(env.queue, res.JobID, attempt))
		if consumer.SpanContext.TraceID() != producer.SpanContext.TraceID() {
			t.Errorf("attempt %d: consumer trace %s, want the producer's %s", attempt, consumer.SpanContext.TraceID(), producer.SpanContext.TraceID())
		}
		if consumer.Parent.SpanID() != producer.SpanContext.SpanID() {
			t.Errorf("attempt %d: consumer parent %s, want the producer span %s", attempt, consumer.Parent.SpanID(), producer.SpanContext.SpanID())
		}
		wantAttrs(t, consumer, map[string]any{
			"messaging.system":           "jobwire",
			"messaging.destination.name": env.queue,
			"messaging.message.id":       res.JobID,
			"jobwire.job.type":           "traced",
			"jobwire.job.attempt":        attempt,
			"jobwire.job.outcome":        outcome,
		})
		failed := consumer.Status.Code == codes.Error
		hasException := len(consumer.Events) > 0 && consumer.Events[0].Name == "exception"
		if attempt == 1 && (!failed || !hasException) {
			t.Errorf("attempt 1 failed but its span has status %v and events %v; want an error with a recorded exception", consumer.Status, consumer.Events)
		}
		if attempt == 2 && failed {
			t.Errorf("attempt 2 succeeded but its span has status %v", consumer.Status)
		}
	}
}

// enqueueFromNode enqueues one JSON job through the TypeScript stack (the
// generated @jobwire/proto descriptors and connect-node's gRPC transport),
// with the given headers, and returns the job id.
func enqueueFromNode(t *testing.T, url, queue, jobType string, payload any, headers map[string]string) string {
	t.Helper()
	root, err := testbroker.FindRepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	const script = `
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { JobService } from "@jobwire/proto/jobwire/v1/job_service_pb";
const transport = createGrpcTransport({ baseUrl: process.env.JW_URL, httpVersion: "2" });
const client = createClient(JobService, transport);
const res = await client.enqueue({ jobs: [{
  queue: process.env.JW_QUEUE,
  type: process.env.JW_TYPE,
  payload: new TextEncoder().encode(process.env.JW_PAYLOAD),
  contentType: "application/json",
  headers: JSON.parse(process.env.JW_HEADERS),
}] });
process.stdout.write(JSON.stringify({ jobId: res.results[0].jobId }) + "\n");
`
	body, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	hdrs, err := json.Marshal(headers)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "--input-type=module", "-e", script)
	// Run from the repo root so the workspace's node_modules resolve.
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"JW_URL="+url, "JW_QUEUE="+queue, "JW_TYPE="+jobType,
		"JW_PAYLOAD="+string(body), "JW_HEADERS="+string(hdrs))
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("node enqueue (in %s): %v\n%s", filepath.Clean(root), err, stderr)
	}
	var res struct {
		JobID string `json:"jobId"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.JobID == "" {
		t.Fatalf("node enqueue printed %q: %v", out, err)
	}
	return res.JobID
}

// A job enqueued by the TypeScript side is processed by a Go worker, and the
// Go consumer span continues the foreign producer's trace: the Go half of
// the cross_language_trace scenario, with a Node producer.
func TestCrossLanguage_cross_language_trace_TypeScriptProducerGoWorker(t *testing.T) {
	t.Parallel()
	env := setup(t, "cross_language_trace")
	seen := env.startGreeter(jobwire.WorkerConfig{})

	// The producer span of the other process, as its traceparent header.
	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	traceparent := "00-" + traceID.String() + "-" + spanID.String() + "-01"

	id := enqueueFromNode(t, brokerURL(t), env.queue, "greet", map[string]string{"name": "grace"},
		map[string]string{"traceparent": traceparent})

	if got := recv(t, seen, "the Go handler to run the TypeScript job"); got.Name != "grace" {
		t.Errorf("handler decoded name %q, want %q", got.Name, "grace")
	}
	job := env.waitForState(id, stateCompleted)
	if job.GetAttempt() != 1 {
		t.Errorf("attempt = %d, want 1", job.GetAttempt())
	}
	consumer := waitForSpan(t, "consumer", consumerSpanOf(env.queue, id, 1))
	if consumer.SpanContext.TraceID() != traceID {
		t.Errorf("consumer trace id = %s, want the producer's %s", consumer.SpanContext.TraceID(), traceID)
	}
	if consumer.Parent.SpanID() != spanID || !consumer.Parent.IsRemote() {
		t.Errorf("consumer parent = %s (remote %v), want the remote producer span %s", consumer.Parent.SpanID(), consumer.Parent.IsRemote(), spanID)
	}
	if !strings.HasPrefix(consumer.Name, "process ") {
		t.Errorf("consumer span name = %q", consumer.Name)
	}
}

// The cross_language_trace scenario as the conformance list states it: a
// job enqueued by the Python client inside an active span, processed by a Go
// worker, ends up in one trace with the Python producer span as parent.
// The Python client's virtualenv (made by clients/python/scripts/test.sh)
// must exist; npm test runs the Python suite first. With
// JOBWIRE_REQUIRE_CROSS_LANGUAGE=1 (as CI sets) a missing one fails the test.
func TestCrossLanguage_cross_language_trace_PythonProducerGoWorker(t *testing.T) {
	t.Parallel()
	root, err := testbroker.FindRepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	python := filepath.Join(root, "clients", "python", ".venv", "bin", "python")
	if _, err := os.Stat(python); err != nil {
		if os.Getenv("JOBWIRE_REQUIRE_CROSS_LANGUAGE") != "" {
			t.Fatalf("no Python client virtualenv at %s: run clients/python/scripts/test.sh first", python)
		}
		t.Skipf("no Python client virtualenv at %s", python)
	}
	env := setup(t, "cross_language_trace")
	seen := env.startGreeter(jobwire.WorkerConfig{})

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	address := strings.TrimPrefix(brokerURL(t), "http://")
	cmd := exec.CommandContext(ctx, python, filepath.Join(root, "clients", "python", "scripts", "trace_enqueue.py"),
		"--address", address, "--queue", env.queue, "--type", "greet", "--payload", `{"name": "guido"}`)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python producer: %v", err)
	}
	var produced struct {
		JobID          string `json:"job_id"`
		TraceID        string `json:"trace_id"`
		ProducerSpanID string `json:"producer_span_id"`
	}
	if err := json.Unmarshal(out, &produced); err != nil {
		t.Fatalf("python producer printed %q: %v", out, err)
	}

	if got := recv(t, seen, "the Go handler to run the Python job"); got.Name != "guido" {
		t.Errorf("handler decoded name %q, want %q", got.Name, "guido")
	}
	env.waitForState(produced.JobID, stateCompleted)
	consumer := waitForSpan(t, "consumer", consumerSpanOf(env.queue, produced.JobID, 1))
	if got := consumer.SpanContext.TraceID().String(); got != produced.TraceID {
		t.Errorf("consumer trace id = %s, want the Python producer's %s", got, produced.TraceID)
	}
	if got := consumer.Parent.SpanID().String(); got != produced.ProducerSpanID || !consumer.Parent.IsRemote() {
		t.Errorf("consumer parent = %s (remote %v), want the Python producer span %s", got, consumer.Parent.IsRemote(), produced.ProducerSpanID)
	}
}
