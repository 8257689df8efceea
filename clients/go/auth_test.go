package jobwire_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
	"github.com/jobwire/jobwire/clients/go/internal/testbroker"
)

// A broker started with JOBWIRE_AUTH_TOKENS refuses calls without a valid
// bearer token, unary and streaming alike; ClientConfig.Token carries the
// token on the Client's calls and on its Worker's Lease stream, heartbeats
// and acks, so a job is enqueued, leased and completed.
func TestClient_TokenAuthenticatesCallsAndWorkerStream(t *testing.T) {
	if os.Getenv("JOBWIRE_TEST_URL") != "" {
		t.Skip("starts a broker of its own with JOBWIRE_AUTH_TOKENS; not with JOBWIRE_TEST_URL")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	const token = "go-client-test-token-0123456789"
	b, err := testbroker.Start(ctx, testbroker.Options{
		// Two tokens, as for a rotation; the client holds the second.
		Env: []string{"JOBWIRE_AUTH_TOKENS=previous-token-0123456789," + token},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Stop(); err != nil {
			t.Errorf("stop the broker: %v", err)
		}
		if t.Failed() {
			t.Logf("broker log tail:\n%s", b.LogTail(6000))
		}
	})
	queue := uniqueQueue("auth")

	// No token, or a wrong one: UNAUTHENTICATED, and not retried.
	for _, tc := range []struct{ name, token string }{{"no token", ""}, {"wrong token", "not-the-right-token-0123456789"}} {
		c, err := jobwire.NewClient(b.URL, &jobwire.ClientConfig{Token: tc.token, Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.EnqueueJSON(ctx, queue, "greet", struct{}{})
		if jobwire.CodeOf(err) != jobwire.CodeUnauthenticated || !strings.HasPrefix(err.Error(), "unauthenticated: ") {
			t.Errorf("%s: Enqueue error = %v, want UNAUTHENTICATED, named in its text", tc.name, err)
		}
		// A worker on such a client is refused its Lease stream for good.
		w, err := jobwire.NewWorker(c, &jobwire.WorkerConfig{
			Queues: []string{queue},
			Logger: slog.New(slog.DiscardHandler), // the refusal is logged as an error
		})
		if err != nil {
			t.Fatal(err)
		}
		w.Handle("greet", func(ctx context.Context, job *jobwire.Job) error {
			t.Errorf("%s: a worker without the token ran job %s", tc.name, job.ID)
			return nil
		})
		runErr := make(chan error, 1)
		go func() { runErr <- w.Run(ctx) }()
		if err := recv(t, runErr, tc.name+": the refused worker's Run to return"); jobwire.CodeOf(err) != jobwire.CodeUnauthenticated || !strings.Contains(err.Error(), "unauthenticated: ") {
			t.Errorf("%s: worker Run returned %v, want UNAUTHENTICATED, named in its text", tc.name, err)
		}
	}

	// With the token: enqueue, lease over the stream, ack, and read back.
	client, err := jobwire.NewClient(b.URL, &jobwire.ClientConfig{Token: token, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	env := &testEnv{t: t, ctx: ctx, client: client, queue: queue}
	ran := make(chan string, 1)
	env.startWorker(jobwire.WorkerConfig{ShutdownTimeout: 2 * time.Second}, func(w *jobwire.Worker) {
		w.Handle("greet", func(ctx context.Context, job *jobwire.Job) error {
			ran <- job.ID
			return nil
		})
	})
	id := mustEnqueueJSON(env, "greet", struct{}{})
	if got := recv(t, ran, "the worker with the token to run the job"); got != id {
		t.Errorf("the worker ran job %s, want %s", got, id)
	}
	env.waitForState(id, stateCompleted)
}

func TestNewClientRejectsTokenWithSpaces(t *testing.T) {
	for _, token := range []string{"two words", "trailing\n", "tab\there"} {
		if _, err := jobwire.NewClient("http://127.0.0.1:1", &jobwire.ClientConfig{Token: token}); err == nil {
			t.Errorf("NewClient accepted token %q", token)
		}
	}
}
