package jobwire_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
	"github.com/jobwire/jobwire/clients/go/internal/testbroker"
)

// The broker restarts while a job is running: the worker's stream breaks
// (the broker ends it with UNAVAILABLE as it drains), the job finishes while
// the broker is down, and its ack, owed across the outage, is delivered
// once the broker is back on the same port and database; the worker also
// reopens its Lease stream and takes new jobs.
func TestWorker_ReconnectsAndDeliversOwedAcksAcrossBrokerRestart(t *testing.T) {
	if os.Getenv("JOBWIRE_TEST_URL") != "" {
		t.Skip("restarts a broker of its own; not with JOBWIRE_TEST_URL")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	dir, err := testbroker.TempDir()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	opts := testbroker.Options{DataDir: filepath.Join(dir, "data"), LogPath: filepath.Join(dir, "broker.log")}
	first, err := testbroker.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	var second *testbroker.Broker
	t.Cleanup(func() {
		for _, b := range []*testbroker.Broker{first, second} {
			if b != nil {
				_ = b.Stop()
			}
		}
		if t.Failed() {
			t.Logf("broker log tail:\n%s", first.LogTail(6000))
		}
	})

	client, err := jobwire.NewClient(first.URL, &jobwire.ClientConfig{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	env := &testEnv{t: t, ctx: ctx, client: client, queue: uniqueQueue("reconnect")}

	started := make(chan string, 1)
	release := make(chan struct{})
	env.startWorker(jobwire.WorkerConfig{
		ReconnectInitialBackoff: 50 * time.Millisecond,
		ReconnectMaxBackoff:     500 * time.Millisecond,
	}, func(w *jobwire.Worker) {
		w.Handle("hold", func(ctx context.Context, job *jobwire.Job) error {
			started <- job.ID
			<-release
			return nil
		})
		w.Handle("quick", func(ctx context.Context, job *jobwire.Job) error { return nil })
	})

	held := mustEnqueueJSON(env, "hold", struct{}{})
	recv(t, started, "the held job to start")

	if err := first.Stop(); err != nil {
		t.Fatalf("stop the first broker: %v", err)
	}
	// Finish the job while no broker listens: its ack must wait, not vanish.
	close(release)

	opts.Port = first.Port
	second, err = testbroker.Start(ctx, opts)
	if err != nil {
		t.Fatalf("restart the broker on port %d: %v", first.Port, err)
	}

	job := env.waitForState(held, stateCompleted)
	if job.GetAttempt() != 1 || len(job.GetErrors()) != 0 {
		t.Errorf("held job: attempt %d, errors %v; want attempt 1 and no errors (the owed ack landed)", job.GetAttempt(), job.GetErrors())
	}
	fresh := mustEnqueueJSON(env, "quick", struct{}{})
	env.waitForState(fresh, stateCompleted)
}
