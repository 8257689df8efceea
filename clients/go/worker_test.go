package jobwire_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	jobwire "github.com/jobwire/jobwire/clients/go"
	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
	"github.com/jobwire/jobwire/clients/go/gen/jobwire/v1/jobwirev1connect"
)

func TestWorker_UnknownJobTypeFailsPermanently(t *testing.T) {
	t.Parallel()
	env := setup(t, "unknown_type")
	env.startWorker(jobwire.WorkerConfig{}, func(w *jobwire.Worker) {
		w.Handle("known", func(ctx context.Context, job *jobwire.Job) error { return nil })
	})

	id := mustEnqueueJSON(env, "mystery", struct{}{}, jobwire.WithMaxAttempts(5))

	job := env.waitForState(id, stateDead)
	if job.GetAttempt() != 1 {
		t.Errorf("attempt = %d, want 1", job.GetAttempt())
	}
	if errs := job.GetErrors(); len(errs) != 1 || !strings.Contains(errs[0].GetMessage(), `no handler for job type "mystery"`) {
		t.Errorf("errors = %v, want one naming the missing handler", errs)
	}
}

func TestWorker_PanicIsRecoveredAsTransientFailure(t *testing.T) {
	t.Parallel()
	env := setup(t, "panic")
	env.startWorker(jobwire.WorkerConfig{}, func(w *jobwire.Worker) {
		w.Handle("explode", func(ctx context.Context, job *jobwire.Job) error {
			if job.Attempt == 1 {
				panic("kaboom")
			}
			return nil
		})
	})

	id := mustEnqueueJSON(env, "explode", struct{}{}, jobwire.WithRetry(50*time.Millisecond, 0, 0))

	job := env.waitForState(id, stateCompleted)
	if job.GetAttempt() != 2 {
		t.Errorf("attempt = %d, want 2", job.GetAttempt())
	}
	if errs := job.GetErrors(); len(errs) != 1 || !strings.Contains(errs[0].GetMessage(), "handler panicked: kaboom") {
		t.Errorf("errors = %v, want one recording the panic", errs)
	}
}

func TestWorker_UndecodableJSONFailsPermanently(t *testing.T) {
	t.Parallel()
	env := setup(t, "bad_json")
	var calls atomic.Int32
	env.startWorker(jobwire.WorkerConfig{}, func(w *jobwire.Worker) {
		jobwire.HandleJSON(w, "typed", func(ctx context.Context, job *jobwire.Job, args greetArgs) error {
			calls.Add(1)
			return nil
		})
	})

	res, err := env.client.Enqueue(env.ctx, &jobwirev1.JobSpec{Queue: env.queue, Type: "typed", Payload: []byte("{not json"), ContentType: jobwire.ContentTypeJSON})
	if err != nil {
		t.Fatal(err)
	}

	job := env.waitForState(res.JobID, stateDead)
	if calls.Load() != 0 {
		t.Error("the typed handler ran although the payload did not decode")
	}
	if errs := job.GetErrors(); len(errs) != 1 || !strings.Contains(errs[0].GetMessage(), "decode JSON payload") {
		t.Errorf("errors = %v, want one about decoding", errs)
	}
}

func TestWorker_RetryAfterSetsTheNextRun(t *testing.T) {
	t.Parallel()
	env := setup(t, "retry_after")
	env.startWorker(jobwire.WorkerConfig{}, func(w *jobwire.Worker) {
		w.Handle("later", func(ctx context.Context, job *jobwire.Job) error {
			return jobwire.RetryAfter(time.Hour, errors.New("rate limited"))
		})
	})
	before := time.Now()

	id := mustEnqueueJSON(env, "later", struct{}{}, jobwire.WithRetry(50*time.Millisecond, 0, 0))

	job := env.waitForState(id, jobwirev1.JobState_JOB_STATE_RETRYABLE)
	if runAt := job.GetRunAt().AsTime(); runAt.Before(before.Add(50 * time.Minute)) {
		t.Errorf("run_at = %v, want about an hour after %v", runAt, before)
	}
}

func TestWorker_NeverRunsMoreThanConcurrency(t *testing.T) {
	t.Parallel()
	env := setup(t, "concurrency")
	const concurrency, jobs = 3, 12
	var (
		mu              sync.Mutex
		current, peak   int
		releaseFirst    = make(chan struct{})
		firstBatchReady = make(chan struct{})
		started         atomic.Int32
	)
	env.startWorker(jobwire.WorkerConfig{Concurrency: concurrency}, func(w *jobwire.Worker) {
		w.Handle("count", func(ctx context.Context, job *jobwire.Job) error {
			mu.Lock()
			current++
			peak = max(peak, current)
			mu.Unlock()
			defer func() {
				mu.Lock()
				current--
				mu.Unlock()
			}()
			// The first `concurrency` jobs hold their slots until all of
			// them have started, so the peak is reached for certain.
			if n := started.Add(1); n <= concurrency {
				if n == concurrency {
					close(firstBatchReady)
				}
				<-releaseFirst
			}
			return nil
		})
	})

	results := env.enqueueNumbered("count", jobs)
	recv(t, firstBatchReady, "the first jobs to fill every slot")
	close(releaseFirst)
	for _, r := range results {
		env.waitForState(r.JobID, stateCompleted)
	}
	mu.Lock()
	defer mu.Unlock()
	if peak != concurrency {
		t.Errorf("at most %d jobs ran at once, want exactly %d", peak, concurrency)
	}
}

// countingHTTP counts the calls made through it, by path.
type countingHTTP struct {
	next  *http.Client
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingHTTP) Do(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.calls[req.URL.Path]++
	c.mu.Unlock()
	return c.next.Do(req)
}

func (c *countingHTTP) count(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[path]
}

func TestWorker_BatchesAcksOfJobsThatFinishTogether(t *testing.T) {
	t.Parallel()
	env := setup(t, "ack_batching")
	counter := &countingHTTP{next: jobwire.NewH2CClient(), calls: map[string]int{}}
	client, err := jobwire.NewClient(brokerURL(t), &jobwire.ClientConfig{HTTPClient: counter, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	env.client = client

	const jobs = 10
	var wg sync.WaitGroup
	wg.Add(jobs)
	allStarted := make(chan struct{})
	go func() { wg.Wait(); close(allStarted) }()
	env.startWorker(jobwire.WorkerConfig{Concurrency: jobs}, func(w *jobwire.Worker) {
		w.Handle("together", func(ctx context.Context, job *jobwire.Job) error {
			wg.Done()
			<-allStarted // every job returns at the same moment
			return nil
		})
	})
	results := env.enqueueNumbered("together", jobs)
	for _, r := range results {
		env.waitForState(r.JobID, stateCompleted)
	}
	acks := counter.count(jobwirev1connect.WorkerServiceAckProcedure)
	if acks > 3 {
		t.Errorf("%d jobs finishing together took %d Ack calls, want them batched (at most 3)", jobs, acks)
	}
	if acks == 0 {
		t.Error("no Ack call was made")
	}
}

// A handler that finishes its work despite a cancellation request returns
// nil: the job is acked, and an ack completes even a cancel-requested job.
func TestWorker_CancelledJobThatFinishesAnywayCompletes(t *testing.T) {
	t.Parallel()
	env := setup(t, "cancel_then_ack")
	started := make(chan string, 1)
	env.startWorker(jobwire.WorkerConfig{}, func(w *jobwire.Worker) {
		w.Handle("stubborn", func(ctx context.Context, job *jobwire.Job) error {
			started <- job.ID
			<-ctx.Done()
			return nil
		})
	})
	id := mustEnqueueJSON(env, "stubborn", struct{}{}, jobwire.WithLeaseDuration(time.Second))
	recv(t, started, "the handler to start")
	if _, err := env.client.CancelJob(env.ctx, id); err != nil {
		t.Fatal(err)
	}
	job := env.waitForState(id, stateCompleted)
	if !job.GetCancelRequested() {
		t.Log("note: the completed job no longer shows cancel_requested")
	}
}

// When in-flight jobs outlast ShutdownTimeout, their contexts are cancelled
// with ErrWorkerShutdown, and a handler that then returns has its attempt
// failed (so the job runs again), not lost.
func TestWorker_ShutdownTimeoutCancelsJobs(t *testing.T) {
	t.Parallel()
	env := setup(t, "shutdown_timeout")
	started := make(chan string, 1)
	causes := make(chan error, 1)
	w := env.startWorker(jobwire.WorkerConfig{ShutdownTimeout: 200 * time.Millisecond}, func(w *jobwire.Worker) {
		w.Handle("endless", func(ctx context.Context, job *jobwire.Job) error {
			started <- job.ID
			<-ctx.Done()
			causes <- context.Cause(ctx)
			return ctx.Err()
		})
	})
	id := mustEnqueueJSON(env, "endless", struct{}{}, jobwire.WithRetry(time.Hour, 0, 0))
	recv(t, started, "the handler to start")

	if err := w.stop(); err != nil {
		t.Errorf("Run returned %v; the handler returned once cancelled, so nothing was abandoned", err)
	}
	if cause := recv(t, causes, "the handler's cancellation"); !errors.Is(cause, jobwire.ErrWorkerShutdown) {
		t.Errorf("cause = %v, want ErrWorkerShutdown", cause)
	}
	job, err := env.client.GetJob(env.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if job.GetState() != jobwirev1.JobState_JOB_STATE_RETRYABLE {
		t.Errorf("job is %v, want RETRYABLE", job.GetState())
	}
	if errs := job.GetErrors(); len(errs) != 1 || !strings.Contains(errs[0].GetMessage(), jobwire.ErrWorkerShutdown.Error()) {
		t.Errorf("errors = %v, want one naming the shutdown", errs)
	}
}

// A handler that ignores cancellation is abandoned after ShutdownTimeout
// plus ShutdownGrace: Run returns, with an error saying so.
func TestWorker_AbandonsHandlersThatIgnoreCancellation(t *testing.T) {
	t.Parallel()
	env := setup(t, "abandon")
	started := make(chan string, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	w := env.startWorker(jobwire.WorkerConfig{ShutdownTimeout: 100 * time.Millisecond, ShutdownGrace: 100 * time.Millisecond}, func(w *jobwire.Worker) {
		w.Handle("deaf", func(ctx context.Context, job *jobwire.Job) error {
			started <- job.ID
			<-release
			return nil
		})
	})
	mustEnqueueJSON(env, "deaf", struct{}{})
	recv(t, started, "the handler to start")

	if err := w.stop(); err == nil || !strings.Contains(err.Error(), "abandoned") {
		t.Errorf("Run returned %v, want an error about the abandoned job", err)
	}
}

func TestWorker_RunNeedsHandlers(t *testing.T) {
	client, err := jobwire.NewClient("http://127.0.0.1:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err := jobwire.NewWorker(client, &jobwire.WorkerConfig{Queues: []string{"q"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Run(context.Background()); err == nil {
		t.Fatal("Run with no handlers returned nil")
	}
}

func TestWorker_RefusedStreamStopsRun(t *testing.T) {
	t.Parallel()
	env := setup(t, "bad_queue")
	w, err := jobwire.NewWorker(env.client, &jobwire.WorkerConfig{Queues: []string{"not a valid queue name!"}, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	w.Handle("x", func(ctx context.Context, job *jobwire.Job) error { return nil })
	done := make(chan error, 1)
	go func() { done <- w.Run(env.ctx) }()
	if err := recv(t, done, "Run to give up on a refused stream"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("Run returned %v, want the broker's refusal", err)
	}
}

// ackHold is a connect interceptor that keeps a worker's Ack calls from
// being answered, as a slow or unreachable broker would, until released.
// A held call hangs for holdFor, then fails as timed out (the worker keeps
// the acks and tries again). Once released, calls go to the broker, and the
// lease tokens of those it answered are recorded.
type ackHold struct {
	holdFor  time.Duration
	release  chan struct{}
	mu       sync.Mutex
	held     int            // Ack calls that were not answered
	answered map[string]int // lease token -> acks the broker answered
}

func newAckHold(holdFor time.Duration) *ackHold {
	return &ackHold{holdFor: holdFor, release: make(chan struct{}), answered: map[string]int{}}
}

func (h *ackHold) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().Procedure != jobwirev1connect.WorkerServiceAckProcedure {
			return next(ctx, req)
		}
		t := time.NewTimer(h.holdFor)
		defer t.Stop()
		select {
		case <-h.release:
		case <-t.C:
			h.mu.Lock()
			h.held++
			h.mu.Unlock()
			return nil, connect.NewError(connect.CodeDeadlineExceeded, errors.New("the ack was held"))
		case <-ctx.Done():
			return nil, connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
		}
		res, err := next(ctx, req)
		if err == nil {
			h.mu.Lock()
			for _, tok := range req.Any().(*jobwirev1.AckRequest).GetLeaseTokens() {
				h.answered[tok]++
			}
			h.mu.Unlock()
		}
		return res, err
	}
}

func (h *ackHold) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (h *ackHold) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func (h *ackHold) heldCalls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held
}

// waitUntil polls cond until it holds, failing the test after waitTimeout.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		time.Sleep(pollInterval)
	}
}

// Credit followed free slots alone: a worker whose handlers finished faster
// than its acks were answered kept taking jobs while the acks it owed piled
// up, each job keeping its lease and its heartbeats (the TypeScript worker
// held ~90,000 of them in the benchmark). It may hold 2 x Concurrency jobs,
// running or owing an ack, plus the credit it granted before reaching that.
func TestWorker_TakesNoMoreJobsWhileItsAcksAreUnanswered(t *testing.T) {
	t.Parallel()
	env := setup(t, "ack_backlog")
	hold := newAckHold(250 * time.Millisecond)
	client, err := jobwire.NewClient(brokerURL(t), &jobwire.ClientConfig{
		Logger:  slog.New(slog.DiscardHandler), // every held ack logs a warning
		Options: []connect.ClientOption{connect.WithInterceptors(hold)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)

	const concurrency, jobs = 10, 200
	var (
		mu   sync.Mutex
		runs = map[string]int{}
	)
	taken := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, c := range runs {
			n += c
		}
		return n
	}
	results := env.enqueueNumbered("quick", jobs)

	worker := &testEnv{t: t, ctx: env.ctx, client: client, queue: env.queue}
	rw := worker.startWorker(jobwire.WorkerConfig{Concurrency: concurrency}, func(w *jobwire.Worker) {
		w.Handle("quick", func(ctx context.Context, job *jobwire.Job) error {
			mu.Lock()
			runs[job.ID]++
			mu.Unlock()
			return nil
		})
	})

	// A failed test must not leave the stopping worker retrying held acks.
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(hold.release) }) }
	t.Cleanup(release)

	// The worker fills its slots and then its ack backlog: 2 x concurrency.
	// Three held Ack calls later it has retried its acks twice, with its
	// slots free all along, and has taken no more.
	waitUntil(t, "the worker to take 2 x concurrency jobs", func() bool { return taken() >= 2*concurrency })
	waitUntil(t, "three held Ack calls", func() bool { return hold.heldCalls() >= 3 })
	t.Logf("%d jobs taken while %d Ack calls were held", taken(), hold.heldCalls())
	if n := taken(); n > 2*concurrency+concurrency {
		t.Fatalf("the worker took %d jobs while none of its acks was answered; want at most %d (2 x concurrency + one credit batch)",
			n, 2*concurrency+concurrency)
	}

	release()
	for _, r := range results {
		job := env.waitForState(r.JobID, stateCompleted)
		if job.GetAttempt() != 1 {
			t.Errorf("job %s completed on attempt %d, want 1", r.JobID, job.GetAttempt())
		}
	}
	// A job completes before the answer to its ack is back; once stopped,
	// the worker has had every answer.
	if err := rw.stop(); err != nil {
		t.Errorf("worker Run returned %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, r := range results {
		if runs[r.JobID] != 1 {
			t.Errorf("job %s ran %d times, want once", r.JobID, runs[r.JobID])
		}
	}
	hold.mu.Lock()
	defer hold.mu.Unlock()
	if len(hold.answered) != jobs {
		t.Errorf("the broker answered acks for %d lease tokens, want %d", len(hold.answered), jobs)
	}
	for tok, n := range hold.answered {
		if n != 1 {
			t.Errorf("lease token %s was acked %d times, want once", tok, n)
		}
	}
}
