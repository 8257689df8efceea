package jobwire

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"
	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
	"github.com/jobwire/jobwire/clients/go/gen/jobwire/v1/jobwirev1connect"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// The outcome on each consumer span, for every way a report can end: the
// vocabulary of test/conformance/scenarios.md. The broker's answers are
// scripted by a fake WorkerService on real h2c; the real broker's answers
// are covered by the conformance and tracing tests.

type fakeWorkers struct {
	jobwirev1connect.UnimplementedWorkerServiceHandler
	nack func() (*jobwirev1.NackResponse, error)
	ack  func(tokens []string) (*jobwirev1.AckResponse, error)
}

func (f *fakeWorkers) Nack(ctx context.Context, req *connect.Request[jobwirev1.NackRequest]) (*connect.Response[jobwirev1.NackResponse], error) {
	res, err := f.nack()
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(res), nil
}

func (f *fakeWorkers) Ack(ctx context.Context, req *connect.Request[jobwirev1.AckRequest]) (*connect.Response[jobwirev1.AckResponse], error) {
	res, err := f.ack(req.Msg.GetLeaseTokens())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(res), nil
}

// outcomeRun is a workerRun whose Client talks to fake, with spans going
// to the returned exporter.
func outcomeRun(t *testing.T, fake *fakeWorkers) (*workerRun, *tracetest.InMemoryExporter) {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(jobwirev1connect.NewWorkerServiceHandler(fake))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	client, err := NewClient(srv.URL, &ClientConfig{TracerProvider: tp, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	w, err := NewWorker(client, &WorkerConfig{Queues: []string{"q"}})
	if err != nil {
		t.Fatal(err)
	}
	r := newWorkerRun(w, context.Background())
	t.Cleanup(r.close)
	return r, exp
}

// heldJob is a job the run holds, with its consumer span started.
func heldJob(r *workerRun, token string) *activeJob {
	aj := r.newActiveJob(&jobwirev1.LeasedJob{LeaseToken: token, Job: &jobwirev1.Job{Id: token, Queue: "q", Type: "t", Attempt: 1}})
	r.mu.Lock()
	r.held[token] = aj
	r.mu.Unlock()
	_, aj.span = r.w.client.startConsumerSpan(aj.ctx, aj.job, r.cfg.WorkerID)
	return aj
}

func outcomeOf(t *testing.T, exp *tracetest.InMemoryExporter, jobID string) (string, codes.Code) {
	t.Helper()
	for _, s := range exp.GetSpans() {
		var id, outcome string
		for _, kv := range s.Attributes {
			switch kv.Key {
			case attrMessagingMessageID:
				id = kv.Value.AsString()
			case attrJobOutcome:
				outcome = kv.Value.AsString()
			}
		}
		if id == jobID {
			return outcome, s.Status.Code
		}
	}
	t.Fatalf("no ended span for job %s", jobID)
	return "", codes.Unset
}

func TestOutcomeOfANack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func() (*jobwirev1.NackResponse, error)
		want   string
	}{
		{"retry", func() (*jobwirev1.NackResponse, error) {
			return &jobwirev1.NackResponse{State: jobwirev1.JobState_JOB_STATE_RETRYABLE}, nil
		}, "retry"},
		{"dead", func() (*jobwirev1.NackResponse, error) {
			return &jobwirev1.NackResponse{State: jobwirev1.JobState_JOB_STATE_DEAD}, nil
		}, "dead"},
		{"cancelled", func() (*jobwirev1.NackResponse, error) {
			return &jobwirev1.NackResponse{State: jobwirev1.JobState_JOB_STATE_CANCELLED}, nil
		}, "cancelled"},
		{"stale token", func() (*jobwirev1.NackResponse, error) {
			return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("lease is gone"))
		}, "lease_lost"},
		{"refused", func() (*jobwirev1.NackResponse, error) {
			return nil, connect.NewError(connect.CodePermissionDenied, errors.New("token lacks the work scope"))
		}, "report_failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := outcomeRun(t, &fakeWorkers{nack: tc.answer})
			aj := heldJob(r, "j1")
			if got := r.report(aj, errors.New("handler failed")); got != tc.want {
				t.Errorf("report = %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("lost before the report", func(t *testing.T) {
		r, _ := outcomeRun(t, &fakeWorkers{nack: func() (*jobwirev1.NackResponse, error) {
			t.Error("a job whose lease is lost was nacked")
			return nil, errors.New("unreachable")
		}})
		aj := heldJob(r, "j1")
		aj.lost.Store(true)
		if got := r.report(aj, errors.New("handler failed")); got != "lease_lost" {
			t.Errorf("report = %q, want lease_lost", got)
		}
	})
}

// An ack's outcome is known only when the broker answers it, so the acker
// ends those spans: completed (status OK), lease_lost for a token the
// broker lists as lost, report_failed when the ack is refused.
func TestOutcomeOfAnAck(t *testing.T) {
	r, exp := outcomeRun(t, &fakeWorkers{ack: func(tokens []string) (*jobwirev1.AckResponse, error) {
		return &jobwirev1.AckResponse{LostLeaseTokens: []string{"late"}}, nil
	}})
	failures := 0
	if left := r.acks.flush([]*activeJob{heldJob(r, "done"), heldJob(r, "late")}, &failures); len(left) != 0 {
		t.Fatalf("flush left %d acks", len(left))
	}
	if got, status := outcomeOf(t, exp, "done"); got != "completed" || status != codes.Ok {
		t.Errorf("acked job: outcome %q status %v, want completed and OK", got, status)
	}
	if got, _ := outcomeOf(t, exp, "late"); got != "lease_lost" {
		t.Errorf("job acked too late: outcome %q, want lease_lost", got)
	}

	r, exp = outcomeRun(t, &fakeWorkers{ack: func(tokens []string) (*jobwirev1.AckResponse, error) {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("token lacks the work scope"))
	}})
	if left := r.acks.flush([]*activeJob{heldJob(r, "refused")}, &failures); len(left) != 0 {
		t.Fatalf("flush kept a refused ack to retry")
	}
	if got, _ := outcomeOf(t, exp, "refused"); got != "report_failed" {
		t.Errorf("refused ack: outcome %q, want report_failed", got)
	}
}
