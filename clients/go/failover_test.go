package jobwire_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
	"github.com/jobwire/jobwire/clients/go/internal/testbroker"
	"go.opentelemetry.io/otel/trace/noop"
)

// Failover across broker replicas on one database: a producer and a worker
// on one Client run against the broker they were pinned to, which is then
// killed with SIGKILL mid-load. They carry on through the other broker, and
// every job is completed. The two ways of naming replicas share one
// database (and its embedded Postgres, in the broker at 127.0.0.2, which
// is never killed).
func TestFailover(t *testing.T) {
	if os.Getenv("JOBWIRE_TEST_URL") != "" {
		t.Skip("starts and kills brokers of its own; not with JOBWIRE_TEST_URL")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	port, err := testbroker.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	survivor := startBroker(t, ctx, testbroker.Options{Host: "127.0.0.2", Port: port})

	t.Run("address_list", func(t *testing.T) {
		victim := startBroker(t, ctx, testbroker.Options{DatabaseURL: survivor.DatabaseURL})
		client := failoverClient(t, victim.URL+","+survivor.URL, nil)
		if got := client.CurrentBroker(); got != victim.URL {
			t.Fatalf("the client starts on %s, want the first broker given, %s", got, victim.URL)
		}
		runThroughBrokerKill(t, ctx, client, victim)
		if got := client.CurrentBroker(); got != survivor.URL {
			t.Errorf("after the kill the client is on %s, want %s", got, survivor.URL)
		}
	})

	t.Run("dns_name", func(t *testing.T) {
		// Same port, two loopback addresses: one name, two A records.
		victim := startBroker(t, ctx, testbroker.Options{Host: "127.0.0.1", Port: port, DatabaseURL: survivor.DatabaseURL})
		resolver := startDNS(t, "127.0.0.1", "127.0.0.2")
		client := failoverClient(t, "http://brokers.jobwire.test:"+strconv.Itoa(port), resolver)
		runThroughBrokerKill(t, ctx, client, victim)
	})
}

// startBroker starts a broker that the test stops (and whose log it shows
// when it fails).
func startBroker(t *testing.T, ctx context.Context, opts testbroker.Options) *testbroker.Broker {
	t.Helper()
	b, err := testbroker.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Stop(); err != nil {
			t.Errorf("stop the broker at %s: %v", b.URL, err)
		}
		if t.Failed() {
			t.Logf("log tail of the broker at %s:\n%s", b.URL, b.LogTail(4000))
		}
	})
	return b
}

func failoverClient(t *testing.T, target string, resolver *net.Resolver) *jobwire.Client {
	t.Helper()
	client, err := jobwire.NewClient(target, &jobwire.ClientConfig{
		Logger:              testLogger(),
		Resolver:            resolver,
		RetryInitialBackoff: 20 * time.Millisecond,
		// Its 800 jobs' spans stay out of the exporter the tracing tests read.
		TracerProvider: noop.NewTracerProvider(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	return client
}

// runThroughBrokerKill runs a producer and a worker on client, kills victim
// (the broker they are on) once a quarter of the jobs are done, and checks
// that every job is enqueued without an error and ends COMPLETED. Half the
// jobs are enqueued after the kill, so they can only have been enqueued,
// leased and acked through the other broker.
func runThroughBrokerKill(t *testing.T, ctx context.Context, client *jobwire.Client, victim *testbroker.Broker) {
	t.Helper()
	const jobs = 400
	env := &testEnv{t: t, ctx: ctx, client: client, queue: uniqueQueue("failover")}

	var (
		mu   sync.Mutex
		seen = map[int]int{}
		// held is the job that a quarter in: it runs through the kill, so
		// its heartbeats and ack can only reach the other broker.
		held string
	)
	quarter := make(chan struct{})
	killed := make(chan struct{})
	w := env.startWorker(jobwire.WorkerConfig{
		Concurrency: 8,
		// A job on its way to the worker when the broker died is leased but
		// never received; it comes back once this lease expires.
		LeaseDuration:           2 * time.Second,
		ReconnectInitialBackoff: 20 * time.Millisecond,
	}, func(w *jobwire.Worker) {
		jobwire.HandleJSON(w, "n", func(ctx context.Context, job *jobwire.Job, n int) error {
			mu.Lock()
			seen[n]++
			holdIt := len(seen) == jobs/4 && held == ""
			if holdIt {
				held = job.ID
				close(quarter)
			}
			mu.Unlock()
			if holdIt {
				select {
				case <-killed:
				case <-ctx.Done():
					return context.Cause(ctx)
				}
			}
			return nil
		})
	})

	produced := make(chan error, 1)
	go func() {
		for i := range jobs {
			if i == jobs/2 {
				select {
				case <-killed:
				case <-ctx.Done():
					produced <- ctx.Err()
					return
				}
			}
			// The key makes a retried enqueue, whose first answer was lost
			// with the broker, return the same job instead of a second one.
			_, err := client.EnqueueJSON(ctx, env.queue, "n", i, jobwire.WithIdempotencyKey(fmt.Sprint(i), 0))
			if err != nil {
				produced <- fmt.Errorf("enqueue %d: %w", i, err)
				return
			}
		}
		produced <- nil
	}()

	recv(t, quarter, "a quarter of the jobs to be processed")
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	close(killed)
	if err := recv(t, produced, "the producer to finish"); err != nil {
		t.Fatalf("the producer failed across the broker kill: %v", err)
	}

	deadline := time.Now().Add(waitTimeout)
	var stats []jobwire.QueueStats
	for {
		var err error
		stats, err = client.GetQueueStats(ctx, env.queue)
		if err != nil {
			t.Fatalf("GetQueueStats: %v", err)
		}
		if len(stats) == 1 && stats[0].Completed == jobs {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the queue holds %+v, want %d jobs COMPLETED", waitTimeout, stats, jobs)
		}
		time.Sleep(pollInterval)
	}
	if s := stats[0]; s.Available+s.Running+s.Retryable+s.Scheduled+s.Dead+s.Cancelled != 0 {
		t.Errorf("besides the completed jobs the queue holds %+v, want nothing", s)
	}
	if err := w.stop(); err != nil {
		t.Errorf("worker Run returned %v, want nil", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if job, err := client.GetJob(ctx, held); err != nil || job.GetAttempt() != 1 {
		t.Errorf("the job running through the kill: attempt %d (%v), want 1: its ack reached the other broker", job.GetAttempt(), err)
	}
	again := 0
	for i := range jobs {
		switch n := seen[i]; {
		case n == 0:
			t.Errorf("job %d completed but its handler never ran here", i)
		case n > 1:
			again++
		}
	}
	// At least once: a job leased by the dead broker but lost on the wire
	// runs again after its lease. Say how many, for the record.
	t.Logf("%d jobs done through a broker SIGKILL; %d of them ran more than once", jobs, again)
}
