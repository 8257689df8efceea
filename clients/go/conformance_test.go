package jobwire_test

// The shared client conformance scenarios of test/conformance/scenarios.md,
// one subtest per scenario id, against a real broker.

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	jobwire "github.com/jobwire/jobwire/clients/go"
	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
	"go.opentelemetry.io/otel/codes"
	"google.golang.org/protobuf/types/known/durationpb"
)

const (
	stateCompleted = jobwirev1.JobState_JOB_STATE_COMPLETED
	stateDead      = jobwirev1.JobState_JOB_STATE_DEAD
	stateCancelled = jobwirev1.JobState_JOB_STATE_CANCELLED
	stateRunning   = jobwirev1.JobState_JOB_STATE_RUNNING
)

type greetArgs struct {
	Name string `json:"name"`
}

// startGreeter starts a worker whose "greet" handler sends each job's
// arguments on the returned channel.
func (e *testEnv) startGreeter(cfg jobwire.WorkerConfig) <-chan greetArgs {
	seen := make(chan greetArgs, 1)
	e.startWorker(cfg, func(w *jobwire.Worker) {
		jobwire.HandleJSON(w, "greet", func(ctx context.Context, job *jobwire.Job, args greetArgs) error {
			seen <- args
			return nil
		})
	})
	return seen
}

func TestConformance(t *testing.T) {
	t.Run("enqueue_and_process", func(t *testing.T) {
		t.Parallel()
		env := setup(t, "enqueue_and_process")
		seen := env.startGreeter(jobwire.WorkerConfig{Concurrency: 2})

		id := mustEnqueueJSON(env, "greet", map[string]string{"name": "ada"})

		if got := recv(t, seen, "the greet handler"); got.Name != "ada" {
			t.Errorf("handler decoded name %q, want %q", got.Name, "ada")
		}
		job := env.waitForState(id, stateCompleted)
		if job.GetAttempt() != 1 {
			t.Errorf("attempt = %d, want 1", job.GetAttempt())
		}
	})

	t.Run("transient_failure_then_retry", func(t *testing.T) {
		t.Parallel()
		env := setup(t, "transient_failure_then_retry")
		const failure = "flaky dependency timed out on attempt 1"
		var calls atomic.Int32
		w := env.startWorker(jobwire.WorkerConfig{Concurrency: 2}, func(w *jobwire.Worker) {
			w.Handle("flaky", func(ctx context.Context, job *jobwire.Job) error {
				calls.Add(1)
				if job.Attempt == 1 {
					return errors.New(failure)
				}
				return nil
			})
		})

		id := mustEnqueueJSON(env, "flaky", map[string]int{"n": 1}, jobwire.WithRetry(50*time.Millisecond, 0, 0))

		job := env.waitForState(id, stateCompleted)
		if job.GetAttempt() != 2 {
			t.Errorf("attempt = %d, want 2", job.GetAttempt())
		}
		if n := calls.Load(); n != 2 {
			t.Errorf("handler ran %d times, want 2", n)
		}
		errs := job.GetErrors()
		if len(errs) != 1 {
			t.Fatalf("errors = %v, want exactly one", errs)
		}
		if errs[0].GetAttempt() != 1 || errs[0].GetMessage() != failure {
			t.Errorf("errors[0] = {attempt %d, message %q}, want {attempt 1, message %q}", errs[0].GetAttempt(), errs[0].GetMessage(), failure)
		}
		if errs[0].GetWorkerId() != w.ID() {
			t.Errorf("errors[0].worker_id = %q, want this worker's %q", errs[0].GetWorkerId(), w.ID())
		}
	})

	t.Run("permanent_failure_to_dead", func(t *testing.T) {
		t.Parallel()
		env := setup(t, "permanent_failure_to_dead")
		const failure = "card number fails the Luhn check"
		var calls atomic.Int32
		env.startWorker(jobwire.WorkerConfig{Concurrency: 2}, func(w *jobwire.Worker) {
			w.Handle("charge", func(ctx context.Context, job *jobwire.Job) error {
				calls.Add(1)
				return jobwire.Permanent(errors.New(failure))
			})
		})

		id := mustEnqueueJSON(env, "charge", map[string]string{"card": "4111"}, jobwire.WithMaxAttempts(5))

		job := env.waitForState(id, stateDead)
		if job.GetAttempt() != 1 {
			t.Errorf("attempt = %d, want 1", job.GetAttempt())
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("handler ran %d times, want 1", n)
		}
		errs := job.GetErrors()
		if len(errs) != 1 || !strings.Contains(errs[0].GetMessage(), failure) {
			t.Errorf("errors = %v, want one entry containing %q", errs, failure)
		}
	})

	t.Run("heartbeat_past_the_lease", func(t *testing.T) {
		t.Parallel()
		env := setup(t, "heartbeat_past_the_lease")
		var calls atomic.Int32
		env.startWorker(jobwire.WorkerConfig{Concurrency: 2}, func(w *jobwire.Worker) {
			w.Handle("slow", func(ctx context.Context, job *jobwire.Job) error {
				calls.Add(1)
				// The work itself: 2.5s, well past the 1s lease.
				work := time.NewTimer(2500 * time.Millisecond)
				defer work.Stop()
				select {
				case <-work.C:
					return nil
				case <-ctx.Done():
					return context.Cause(ctx)
				}
			})
		})

		id := mustEnqueueJSON(env, "slow", struct{}{}, jobwire.WithLeaseDuration(time.Second))

		job := env.waitForState(id, stateCompleted)
		if job.GetAttempt() != 1 {
			t.Errorf("attempt = %d, want 1 (the job was redelivered)", job.GetAttempt())
		}
		if len(job.GetErrors()) != 0 {
			t.Errorf("errors = %v, want none", job.GetErrors())
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("handler ran %d times, want 1", n)
		}
	})

	t.Run("cancellation", func(t *testing.T) {
		t.Parallel()
		env := setup(t, "cancellation")
		type sawCancel struct {
			at    time.Time
			cause error
		}
		started := make(chan string, 1)
		saw := make(chan sawCancel, 1)
		env.startWorker(jobwire.WorkerConfig{Concurrency: 2}, func(w *jobwire.Worker) {
			w.Handle("long", func(ctx context.Context, job *jobwire.Job) error {
				started <- job.ID
				<-ctx.Done()
				saw <- sawCancel{at: time.Now(), cause: context.Cause(ctx)}
				return ctx.Err()
			})
		})

		id := mustEnqueueJSON(env, "long", struct{}{}, jobwire.WithLeaseDuration(time.Second))
		if got := recv(t, started, "the handler to start"); got != id {
			t.Fatalf("handler started job %s, want %s", got, id)
		}
		cancelledAt := time.Now()
		job, err := env.client.CancelJob(env.ctx, id)
		if err != nil {
			t.Fatalf("CancelJob: %v", err)
		}
		if job.GetState() != stateRunning || !job.GetCancelRequested() {
			t.Errorf("CancelJob answered state %v cancel_requested %v, want RUNNING with cancel_requested", job.GetState(), job.GetCancelRequested())
		}

		got := recv(t, saw, "the handler to see the cancellation")
		if !errors.Is(got.cause, jobwire.ErrJobCancelled) {
			t.Errorf("context cause = %v, want ErrJobCancelled", got.cause)
		}
		// Heartbeats come every third of the 1s lease; "a few" of them.
		if d := got.at.Sub(cancelledAt); d > 2*time.Second {
			t.Errorf("handler saw the cancellation %v after CancelJob, want within a few heartbeats (2s)", d)
		}
		env.waitForState(id, stateCancelled)
	})

	t.Run("cancel_then_return", func(t *testing.T) {
		t.Parallel()
		env := setup(t, "cancel_then_return")
		started := make(chan string, 1)
		saw := make(chan error, 1)
		env.startWorker(jobwire.WorkerConfig{Concurrency: 2}, func(w *jobwire.Worker) {
			w.Handle("long", func(ctx context.Context, job *jobwire.Job) error {
				started <- job.ID
				<-ctx.Done()
				saw <- context.Cause(ctx)
				return nil // the work is done, cancelled or not
			})
		})

		id := mustEnqueueJSON(env, "long", struct{}{}, jobwire.WithLeaseDuration(time.Second))
		recv(t, started, "the handler to start")
		if _, err := env.client.CancelJob(env.ctx, id); err != nil {
			t.Fatalf("CancelJob: %v", err)
		}
		if cause := recv(t, saw, "the handler to see the cancellation"); !errors.Is(cause, jobwire.ErrJobCancelled) {
			t.Errorf("context cause = %v, want ErrJobCancelled", cause)
		}
		job := env.waitForState(id, stateCompleted)
		if job.GetAttempt() != 1 {
			t.Errorf("attempt = %d, want 1", job.GetAttempt())
		}
		span := waitForSpan(t, "consumer", consumerSpanOf(env.queue, id, 1))
		wantAttrs(t, span, map[string]any{"jobwire.job.outcome": "completed"})
		if span.Status.Code != codes.Ok {
			t.Errorf("consumer span status = %v, want OK", span.Status)
		}
	})

	t.Run("stale_lease_refused", func(t *testing.T) {
		t.Parallel()
		env := setup(t, "stale_lease_refused")
		id := mustEnqueueJSON(env, "stale", struct{}{}, jobwire.WithRetry(50*time.Millisecond, 0, 0), jobwire.WithMaxAttempts(5))

		// A raw Lease stream: no worker runtime, so nothing heartbeats.
		workers := env.client.WorkerService()
		streamCtx, cancelStream := context.WithTimeout(env.ctx, waitTimeout)
		defer cancelStream()
		stream := workers.Lease(streamCtx)
		err := stream.Send(&jobwirev1.LeaseRequest{Msg: &jobwirev1.LeaseRequest_Open{Open: &jobwirev1.LeaseOpen{
			Queues:        []string{env.queue},
			WorkerId:      "stale-lease-test",
			MaxInFlight:   1,
			LeaseDuration: durationpb.New(time.Second),
		}}})
		if err != nil {
			t.Fatalf("send open: %v", err)
		}
		first := receiveLeasedJob(t, stream)
		if first.GetJob().GetId() != id {
			t.Fatalf("leased job %s, want %s", first.GetJob().GetId(), id)
		}
		token1 := first.GetLeaseToken()

		// Ask for one more job, and do not heartbeat: the lease expires, the
		// reaper makes the job retryable, and it comes back with a new token.
		if err := stream.Send(&jobwirev1.LeaseRequest{Msg: &jobwirev1.LeaseRequest_Credit{Credit: &jobwirev1.LeaseCredit{Count: 1}}}); err != nil {
			t.Fatalf("send credit: %v", err)
		}
		second := receiveLeasedJob(t, stream)
		token2 := second.GetLeaseToken()
		if second.GetJob().GetId() != id || token2 == token1 {
			t.Fatalf("second lease is job %s token %q; want job %s with a new token", second.GetJob().GetId(), token2, id)
		}
		if second.GetJob().GetAttempt() != 2 {
			t.Errorf("second lease attempt = %d, want 2", second.GetJob().GetAttempt())
		}

		ack, err := workers.Ack(env.ctx, connect.NewRequest(&jobwirev1.AckRequest{LeaseTokens: []string{token1}}))
		if err != nil {
			t.Fatalf("Ack(first token): %v", err)
		}
		if !slices.Contains(ack.Msg.GetLostLeaseTokens(), token1) {
			t.Errorf("Ack(first token) lost_lease_tokens = %v, want it listed", ack.Msg.GetLostLeaseTokens())
		}

		_, err = workers.Nack(env.ctx, connect.NewRequest(&jobwirev1.NackRequest{LeaseToken: token1, Error: "stale"}))
		if codeOf(err) != connect.CodeFailedPrecondition {
			t.Errorf("Nack(first token) error = %v, want FAILED_PRECONDITION", err)
		}

		hb, err := workers.Heartbeat(env.ctx, connect.NewRequest(&jobwirev1.HeartbeatRequest{LeaseTokens: []string{token1}}))
		if err != nil {
			t.Fatalf("Heartbeat(first token): %v", err)
		}
		if r := hb.Msg.GetResults(); len(r) != 1 || !r[0].GetLost() {
			t.Errorf("Heartbeat(first token) results = %v, want one with lost = true", r)
		}

		ack, err = workers.Ack(env.ctx, connect.NewRequest(&jobwirev1.AckRequest{LeaseTokens: []string{token2}}))
		if err != nil {
			t.Fatalf("Ack(second token): %v", err)
		}
		if lost := ack.Msg.GetLostLeaseTokens(); len(lost) != 0 {
			t.Errorf("Ack(second token) lost_lease_tokens = %v, want none", lost)
		}
		job := env.waitForState(id, stateCompleted)
		if job.GetAttempt() != 2 {
			t.Errorf("attempt = %d, want 2", job.GetAttempt())
		}

		// Half-close: the broker ends the stream cleanly.
		if err := stream.CloseRequest(); err != nil {
			t.Fatalf("CloseRequest: %v", err)
		}
		for {
			if _, err := stream.Receive(); err != nil {
				if !errors.Is(err, io.EOF) {
					t.Errorf("after the half-close the stream ended with %v, want a clean end", err)
				}
				break
			}
		}
		_ = stream.CloseResponse()
	})

	t.Run("graceful_shutdown", func(t *testing.T) {
		t.Parallel()
		env := setup(t, "graceful_shutdown")
		started := make(chan string, 2)
		var interrupted atomic.Int32
		w := env.startWorker(jobwire.WorkerConfig{Concurrency: 2}, func(w *jobwire.Worker) {
			w.Handle("work", func(ctx context.Context, job *jobwire.Job) error {
				started <- job.ID
				work := time.NewTimer(300 * time.Millisecond)
				defer work.Stop()
				select {
				case <-work.C:
					return nil
				case <-ctx.Done():
					interrupted.Add(1)
					return context.Cause(ctx)
				}
			})
		})

		specs := make([]*jobwirev1.JobSpec, 2)
		for i := range specs {
			spec, err := jobwire.NewJSONJob(env.queue, "work", map[string]int{"i": i})
			if err != nil {
				t.Fatal(err)
			}
			specs[i] = spec
		}
		results, err := env.client.EnqueueMany(env.ctx, specs)
		if err != nil {
			t.Fatalf("EnqueueMany: %v", err)
		}
		recv(t, started, "the first handler to start")
		recv(t, started, "the second handler to start")

		if err := w.stop(); err != nil {
			t.Fatalf("Run returned %v, want nil after a graceful stop", err)
		}
		if n := interrupted.Load(); n != 0 {
			t.Errorf("%d handler(s) were cancelled; a graceful stop lets them finish", n)
		}
		// Run has returned, so its acks are flushed: no polling needed.
		for _, r := range results {
			job, err := env.client.GetJob(env.ctx, r.JobID)
			if err != nil {
				t.Fatal(err)
			}
			if job.GetState() != stateCompleted || job.GetAttempt() != 1 {
				t.Errorf("job %s is %v at attempt %d, want COMPLETED at attempt 1", r.JobID, job.GetState(), job.GetAttempt())
			}
		}
		running, err := env.client.ListJobs(env.ctx, &jobwirev1.ListJobsRequest{Queue: env.queue, States: []jobwirev1.JobState{stateRunning}})
		if err != nil {
			t.Fatalf("ListJobs: %v", err)
		}
		if n := len(running.GetJobs()); n != 0 {
			t.Errorf("%d job(s) left RUNNING after the worker stopped", n)
		}
	})
}

// receiveLeasedJob reads the stream until a job arrives, skipping
// keepalives, and returns the first job.
func receiveLeasedJob(t *testing.T, stream *connect.BidiStreamForClient[jobwirev1.LeaseRequest, jobwirev1.LeaseResponse]) *jobwirev1.LeasedJob {
	t.Helper()
	for {
		msg, err := stream.Receive()
		if err != nil {
			t.Fatalf("Lease stream ended while waiting for a job: %v", err)
		}
		if jobs := msg.GetJobs(); len(jobs) > 0 {
			if len(jobs) > 1 {
				t.Fatalf("got %d jobs with one credit", len(jobs))
			}
			return jobs[0]
		}
	}
}
