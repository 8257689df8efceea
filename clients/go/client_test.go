package jobwire_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	jobwire "github.com/jobwire/jobwire/clients/go"
	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
	"github.com/jobwire/jobwire/clients/go/gen/jobwire/v1/jobwirev1connect"
	"go.opentelemetry.io/otel/propagation"
)

func TestClient_EnqueueManyKeepsOrderAndIdempotency(t *testing.T) {
	t.Parallel()
	env := setup(t, "enqueue_many")
	a, _ := jobwire.NewJSONJob(env.queue, "a", 1, jobwire.WithIdempotencyKey("order-7", time.Hour))
	b, _ := jobwire.NewJSONJob(env.queue, "b", 2, jobwire.WithDelay(time.Hour))
	results, err := env.client.EnqueueMany(env.ctx, []*jobwirev1.JobSpec{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 || results[0].Duplicate || results[1].Duplicate {
		t.Fatalf("results = %+v, want two new jobs", results)
	}
	for i, want := range []string{"a", "b"} {
		job, err := env.client.GetJob(env.ctx, results[i].JobID)
		if err != nil {
			t.Fatal(err)
		}
		if job.GetType() != want {
			t.Errorf("result %d is a job of type %q, want %q", i, job.GetType(), want)
		}
	}
	job, _ := env.client.GetJob(env.ctx, results[1].JobID)
	if job.GetState() != jobwirev1.JobState_JOB_STATE_SCHEDULED {
		t.Errorf("delayed job is %v, want SCHEDULED", job.GetState())
	}

	again, err := env.client.EnqueueJSON(env.ctx, env.queue, "a", 1, jobwire.WithIdempotencyKey("order-7", time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.JobID != results[0].JobID {
		t.Errorf("second enqueue with the key = %+v, want a duplicate of %s", again, results[0].JobID)
	}
}

func TestClient_EnqueueJSONSetsPayloadAndContentType(t *testing.T) {
	t.Parallel()
	env := setup(t, "enqueue_json")
	res, err := env.client.EnqueueJSON(env.ctx, env.queue, "j", map[string]any{"n": 42}, jobwire.WithPriority(3), jobwire.WithMaxAttempts(4), jobwire.WithHeader("tenant", "acme"))
	if err != nil {
		t.Fatal(err)
	}
	job, err := env.client.GetJob(env.ctx, res.JobID)
	if err != nil {
		t.Fatal(err)
	}
	var payload map[string]int
	if err := json.Unmarshal(job.GetPayload(), &payload); err != nil || payload["n"] != 42 {
		t.Errorf("payload = %s, want {\"n\":42}", job.GetPayload())
	}
	if job.GetContentType() != "application/json" || job.GetPriority() != 3 || job.GetMaxAttempts() != 4 || job.GetHeaders()["tenant"] != "acme" {
		t.Errorf("job = content type %q, priority %d, max attempts %d, headers %v", job.GetContentType(), job.GetPriority(), job.GetMaxAttempts(), job.GetHeaders())
	}
	if job.GetHeaders()["traceparent"] == "" {
		t.Error("Enqueue did not inject a traceparent header")
	}
}

func TestClient_GetUnknownJobIsNotFound(t *testing.T) {
	t.Parallel()
	env := setup(t, "not_found")
	_, err := env.client.GetJob(env.ctx, "9223372036854775807")
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("GetJob(unknown) error = %v, want NOT_FOUND", err)
	}
}

func TestClient_CancelWaitingJobAndCompletedJob(t *testing.T) {
	t.Parallel()
	env := setup(t, "cancel_waiting")
	id := mustEnqueueJSON(env, "later", struct{}{}, jobwire.WithDelay(time.Hour))
	job, err := env.client.CancelJob(env.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if job.GetState() != stateCancelled {
		t.Errorf("cancelled waiting job is %v, want CANCELLED", job.GetState())
	}
	if _, err := env.client.CancelJob(env.ctx, id); err != nil {
		t.Errorf("cancelling a cancelled job: %v, want a no-op", err)
	}

	done := mustEnqueueJSON(env, "now", struct{}{})
	env.startWorker(jobwire.WorkerConfig{}, func(w *jobwire.Worker) {
		w.Handle("now", func(ctx context.Context, job *jobwire.Job) error { return nil })
	})
	env.waitForState(done, stateCompleted)
	if _, err := env.client.CancelJob(env.ctx, done); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("cancelling a completed job: %v, want FAILED_PRECONDITION", err)
	}
}

func TestClient_ReplayDeadJob(t *testing.T) {
	t.Parallel()
	env := setup(t, "replay")
	var calls atomic.Int32
	env.startWorker(jobwire.WorkerConfig{}, func(w *jobwire.Worker) {
		w.Handle("once-broken", func(ctx context.Context, job *jobwire.Job) error {
			if calls.Add(1) == 1 {
				return jobwire.Permanent(errors.New("broken until replayed"))
			}
			return nil
		})
	})
	id := mustEnqueueJSON(env, "once-broken", struct{}{})
	env.waitForState(id, stateDead)

	res, err := env.client.ReplayJobs(env.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if res.GetReplayed() != 1 {
		t.Errorf("replayed = %d, want 1", res.GetReplayed())
	}
	job := env.waitForState(id, stateCompleted)
	if len(job.GetErrors()) != 1 {
		t.Errorf("errors = %v, want the first failure kept", job.GetErrors())
	}
}

// fakeJobService answers GetJob from a script, for testing the client's
// retries and deadlines without a broker.
type fakeJobService struct {
	jobwirev1connect.UnimplementedJobServiceHandler
	calls  atomic.Int32
	answer func(ctx context.Context, call int32) (*jobwirev1.GetJobResponse, error)
}

func (f *fakeJobService) GetJob(ctx context.Context, req *connect.Request[jobwirev1.GetJobRequest]) (*connect.Response[jobwirev1.GetJobResponse], error) {
	res, err := f.answer(ctx, f.calls.Add(1))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(res), nil
}

// fakeBroker serves fake over gRPC on h2c, as the broker does.
func fakeBroker(t *testing.T, fake *fakeJobService, cfg *jobwire.ClientConfig) *jobwire.Client {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(jobwirev1connect.NewJobServiceHandler(fake))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	client, err := jobwire.NewClient(srv.URL, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	return client
}

func TestClient_RetriesUnavailable(t *testing.T) {
	fake := &fakeJobService{answer: func(ctx context.Context, call int32) (*jobwirev1.GetJobResponse, error) {
		if call < 3 {
			return nil, connect.NewError(connect.CodeUnavailable, errors.New("draining"))
		}
		return &jobwirev1.GetJobResponse{Job: &jobwirev1.Job{Id: "j1"}}, nil
	}}
	client := fakeBroker(t, fake, &jobwire.ClientConfig{RetryInitialBackoff: time.Millisecond, RetryMaxBackoff: 5 * time.Millisecond})
	job, err := client.GetJob(context.Background(), "j1")
	if err != nil {
		t.Fatalf("GetJob: %v", err)
	}
	if job.GetId() != "j1" || fake.calls.Load() != 3 {
		t.Errorf("got job %q after %d calls, want j1 after 3", job.GetId(), fake.calls.Load())
	}
}

func TestClient_GivesUpAfterRetryAttempts(t *testing.T) {
	fake := &fakeJobService{answer: func(ctx context.Context, call int32) (*jobwirev1.GetJobResponse, error) {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("down"))
	}}
	client := fakeBroker(t, fake, &jobwire.ClientConfig{RetryAttempts: 4, RetryInitialBackoff: time.Millisecond, RetryMaxBackoff: 5 * time.Millisecond})
	_, err := client.GetJob(context.Background(), "j1")
	if connect.CodeOf(err) != connect.CodeUnavailable || fake.calls.Load() != 4 {
		t.Errorf("error %v after %d calls, want UNAVAILABLE after 4", err, fake.calls.Load())
	}
}

func TestClient_DoesNotRetryOtherCodes(t *testing.T) {
	fake := &fakeJobService{answer: func(ctx context.Context, call int32) (*jobwirev1.GetJobResponse, error) {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no such job"))
	}}
	client := fakeBroker(t, fake, nil)
	_, err := client.GetJob(context.Background(), "j1")
	if connect.CodeOf(err) != connect.CodeNotFound || fake.calls.Load() != 1 {
		t.Errorf("error %v after %d calls, want NOT_FOUND after 1", err, fake.calls.Load())
	}
}

func TestClient_AppliesCallTimeout(t *testing.T) {
	fake := &fakeJobService{answer: func(ctx context.Context, call int32) (*jobwirev1.GetJobResponse, error) {
		<-ctx.Done() // a broker that never answers
		return nil, ctx.Err()
	}}
	client := fakeBroker(t, fake, &jobwire.ClientConfig{CallTimeout: 100 * time.Millisecond})
	start := time.Now()
	_, err := client.GetJob(context.Background(), "j1")
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Errorf("error = %v, want DEADLINE_EXCEEDED", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the call took %v despite a 100ms call timeout", d)
	}
}

func TestClient_CallerDeadlineWins(t *testing.T) {
	var sawDeadline atomic.Bool
	fake := &fakeJobService{answer: func(ctx context.Context, call int32) (*jobwirev1.GetJobResponse, error) {
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) > time.Minute {
			sawDeadline.Store(true)
		}
		return &jobwirev1.GetJobResponse{Job: &jobwirev1.Job{Id: "j1"}}, nil
	}}
	client := fakeBroker(t, fake, &jobwire.ClientConfig{CallTimeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if _, err := client.GetJob(ctx, "j1"); err != nil {
		t.Fatal(err)
	}
	if !sawDeadline.Load() {
		t.Error("the broker did not see the caller's one-hour deadline")
	}
}

func TestClient_ExplicitPropagatorIsUsed(t *testing.T) {
	fake := &fakeJobService{}
	client := fakeBroker(t, fake, &jobwire.ClientConfig{Propagator: propagation.TraceContext{}})
	_ = client // construction with an explicit propagator must work without the globals
}

func TestNewClientRejectsURLWithoutScheme(t *testing.T) {
	if _, err := jobwire.NewClient("127.0.0.1:50051", nil); err == nil {
		t.Error("NewClient accepted a URL without http://")
	}
}
