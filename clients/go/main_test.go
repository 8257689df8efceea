package jobwire_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	jobwire "github.com/jobwire/jobwire/clients/go"
	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
	"github.com/jobwire/jobwire/clients/go/internal/testbroker"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// Test-wide limits. Every wait is bounded; none is a bare sleep.
const (
	// waitTimeout bounds waiting for a job state or a handler signal.
	waitTimeout = 30 * time.Second
	// pollInterval is the pace of GetJob polling while waiting for a state.
	pollInterval = 20 * time.Millisecond
	// testTimeout bounds a whole test's calls.
	testTimeout = 2 * time.Minute
)

var (
	// spans receives every span the package's tests make, through the
	// global tracer provider, as an application would configure it.
	spans = tracetest.NewInMemoryExporter()

	brokerOnce sync.Once
	broker     *testbroker.Broker
	brokerErr  error
)

// TestMain installs the global OpenTelemetry provider and propagator, runs
// the tests, and stops the broker that the first test needing one started
// (tests that need none, run alone, start none).
//
// The examples cannot ask for a broker as tests do, so when they are going
// to run (no -run filter, or one naming Example) the broker is started
// first and its URL put in JOBWIRE_URL, where the examples look.
func TestMain(m *testing.M) {
	flag.Parse()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))

	if run := flag.Lookup("test.run").Value.String(); run == "" || strings.Contains(run, "Example") {
		url, err := sharedBroker()
		if err != nil {
			fmt.Fprintf(os.Stderr, "start the broker for the examples: %v\n", err)
			os.Exit(1)
		}
		os.Setenv("JOBWIRE_URL", url)
	}

	code := m.Run()

	if broker != nil {
		if err := broker.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping the test broker: %v\nbroker log tail:\n%s\n", err, broker.LogTail(4000))
			if code == 0 {
				code = 1
			}
		}
	}
	_ = tp.Shutdown(context.Background())
	os.Exit(code)
}

// brokerURL returns the shared broker's URL, starting it on first use.
// JOBWIRE_TEST_URL points the tests at a broker that is already running.
func brokerURL(t testing.TB) string {
	t.Helper()
	url, err := sharedBroker()
	if err != nil {
		t.Fatalf("start the broker: %v", err)
	}
	return url
}

func sharedBroker() (string, error) {
	if u := os.Getenv("JOBWIRE_TEST_URL"); u != "" {
		return u, nil
	}
	brokerOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testbroker.StartTimeout)
		defer cancel()
		broker, brokerErr = testbroker.Start(ctx, testbroker.Options{})
	})
	if brokerErr != nil {
		return "", brokerErr
	}
	return broker.URL, nil
}

// testLogger logs the worker's warnings and errors (everything with
// JOBWIRE_TEST_LOG=debug) to stderr.
func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("JOBWIRE_TEST_LOG") == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// testEnv is one test's fixtures: a client, a queue of its own, a context.
type testEnv struct {
	t      *testing.T
	ctx    context.Context
	client *jobwire.Client
	queue  string
}

// setup builds a test's fixtures. Each test gets a fresh queue, so tests
// never see each other's jobs and may run in parallel.
func setup(t *testing.T, name string) *testEnv {
	t.Helper()
	url := brokerURL(t)
	client, err := jobwire.NewClient(url, &jobwire.ClientConfig{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return &testEnv{t: t, ctx: ctx, client: client, queue: uniqueQueue(name)}
}

// uniqueQueue makes a queue name from a scenario id: queue names allow
// [A-Za-z0-9._:-], so underscores become dashes.
func uniqueQueue(name string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "conf-" + strings.ReplaceAll(name, "_", "-") + "-" + hex.EncodeToString(b[:])
}

// runningWorker is a Worker whose Run is going on in the background.
type runningWorker struct {
	*jobwire.Worker
	cancel context.CancelFunc
	done   chan error
}

// startWorker runs a worker on the env's queue. register adds handlers.
// The worker is stopped, and its Run awaited, when the test ends.
func (e *testEnv) startWorker(cfg jobwire.WorkerConfig, register func(w *jobwire.Worker)) *runningWorker {
	e.t.Helper()
	if len(cfg.Queues) == 0 {
		cfg.Queues = []string{e.queue}
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 5 * time.Second
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = 2 * time.Second
	}
	w, err := jobwire.NewWorker(e.client, &cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	register(w)
	ctx, cancel := context.WithCancel(context.Background())
	rw := &runningWorker{Worker: w, cancel: cancel, done: make(chan error, 1)}
	go func() { rw.done <- w.Run(ctx) }()
	e.t.Cleanup(func() {
		if err := rw.stop(); err != nil && !errors.Is(err, errAlreadyStopped) {
			e.t.Errorf("worker Run returned %v", err)
		}
	})
	return rw
}

var errAlreadyStopped = errors.New("already stopped")

// stop asks the worker to stop the way SIGTERM would (by cancelling Run's
// context) and waits for Run to return.
func (rw *runningWorker) stop() error {
	rw.cancel()
	select {
	case err, ok := <-rw.done:
		if !ok {
			return errAlreadyStopped
		}
		close(rw.done)
		return err
	case <-time.After(waitTimeout):
		return errors.New("Run did not return after its context was cancelled")
	}
}

// enqueueNumbered enqueues n jobs of jobType on the env's queue, each with
// the JSON payload {"i": index}, in one call.
func (e *testEnv) enqueueNumbered(jobType string, n int) []jobwire.EnqueueResult {
	e.t.Helper()
	specs := make([]*jobwirev1.JobSpec, n)
	for i := range specs {
		specs[i], _ = jobwire.NewJSONJob(e.queue, jobType, map[string]int{"i": i})
	}
	results, err := e.client.EnqueueMany(e.ctx, specs)
	if err != nil {
		e.t.Fatal(err)
	}
	return results
}

// waitForState polls the job until it reaches want, and fails the test if
// it reaches another final state or the wait times out.
func (e *testEnv) waitForState(id string, want jobwirev1.JobState) *jobwirev1.Job {
	e.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	var last *jobwirev1.Job
	for {
		job, err := e.client.GetJob(e.ctx, id)
		if err != nil {
			e.t.Fatalf("GetJob(%s): %v", id, err)
		}
		last = job
		if job.GetState() == want {
			return job
		}
		if isFinal(job.GetState()) && job.GetState() != want {
			e.t.Fatalf("job %s ended %v, want %v; errors: %v", id, job.GetState(), want, job.GetErrors())
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("job %s still %v after %v, want %v (attempt %d, errors %v)",
				id, last.GetState(), waitTimeout, want, last.GetAttempt(), last.GetErrors())
		}
		time.Sleep(pollInterval)
	}
}

func isFinal(s jobwirev1.JobState) bool {
	switch s {
	case jobwirev1.JobState_JOB_STATE_COMPLETED, jobwirev1.JobState_JOB_STATE_DEAD, jobwirev1.JobState_JOB_STATE_CANCELLED:
		return true
	}
	return false
}

// recv waits for a value on ch.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		// A hang is a bug somewhere: show where everything is stuck.
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		var zero T
		return zero
	}
}

func mustEnqueueJSON(e *testEnv, jobType string, v any, opts ...jobwire.JobOption) string {
	e.t.Helper()
	res, err := e.client.EnqueueJSON(e.ctx, e.queue, jobType, v, opts...)
	if err != nil {
		e.t.Fatalf("enqueue %s: %v", jobType, err)
	}
	if res.JobID == "" {
		e.t.Fatal("enqueue returned an empty job id")
	}
	return res.JobID
}

func codeOf(err error) connect.Code { return connect.CodeOf(err) }
