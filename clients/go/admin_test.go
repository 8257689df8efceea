package jobwire_test

import (
	"context"
	"slices"
	"testing"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

// Clearing a setting goes through update_mask, and leaves the others alone.
func TestClient_QueueConfigClearsOneSettingAndKeepsTheRest(t *testing.T) {
	t.Parallel()
	env := setup(t, "queue_config_clear")
	_, err := env.client.SetQueueConfig(env.ctx, env.queue, jobwire.QueueConfigUpdate{
		MaxRunning:    new(5),
		MaxAttempts:   new(3),
		LeaseDuration: new(45 * time.Second),
	})
	if err != nil {
		t.Fatalf("SetQueueConfig: %v", err)
	}
	cfg, err := env.client.SetQueueConfig(env.ctx, env.queue, jobwire.QueueConfigUpdate{
		MaxRunningPerKey: new(2),
		Clear:            []jobwire.QueueConfigField{jobwire.QueueMaxRunning},
	})
	if err != nil {
		t.Fatalf("SetQueueConfig(clear max_running): %v", err)
	}
	got, err := env.client.GetQueueConfig(env.ctx, env.queue)
	if err != nil {
		t.Fatalf("GetQueueConfig: %v", err)
	}
	for name, c := range map[string]*jobwire.QueueConfig{"SetQueueConfig's answer": cfg, "GetQueueConfig": got} {
		if c.MaxRunning != nil || deref(c.MaxAttempts) != 3 || deref(c.LeaseDuration) != 45*time.Second || deref(c.MaxRunningPerKey) != 2 {
			t.Errorf("%s: max_running %v, max_attempts %v, lease_duration %v, max_running_per_key %v; want unset, 3, 45s, 2",
				name, deref(c.MaxRunning), deref(c.MaxAttempts), deref(c.LeaseDuration), deref(c.MaxRunningPerKey))
		}
	}
}

// ListWorkers shows a running worker's Lease stream: its worker id,
// queues and credit, and how the credit falls as the broker sends a job.
func TestClient_ListWorkersShowsTheLeaseStream(t *testing.T) {
	t.Parallel()
	env := setup(t, "list_workers")
	started, release := make(chan string, 1), make(chan struct{})
	w := env.startWorker(jobwire.WorkerConfig{Concurrency: 3}, func(w *jobwire.Worker) {
		w.Handle("t", func(ctx context.Context, job *jobwire.Job) error {
			started <- job.ID
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		})
	})
	// waitForStream polls until the worker's stream is listed and ok says
	// it is as wanted, and returns it.
	waitForStream := func(what string, ok func(jobwire.WorkerStream) bool) jobwire.WorkerStream {
		t.Helper()
		deadline := time.Now().Add(waitTimeout)
		for {
			streams, err := env.client.ListWorkers(env.ctx, env.queue)
			if err != nil {
				t.Fatalf("ListWorkers: %v", err)
			}
			i := slices.IndexFunc(streams, func(s jobwire.WorkerStream) bool { return s.WorkerID == w.ID() })
			if i >= 0 && ok(streams[i]) {
				if len(streams) != 1 {
					t.Errorf("ListWorkers(%s) = %+v, want only worker %s's stream", env.queue, streams, w.ID())
				}
				return streams[i]
			}
			if time.Now().After(deadline) {
				t.Fatalf("ListWorkers(%s) = %+v after %v, want worker %s's stream %s", env.queue, streams, waitTimeout, w.ID(), what)
			}
			time.Sleep(pollInterval)
		}
	}

	// The open message grants Concurrency credit.
	s := waitForStream("listed", func(jobwire.WorkerStream) bool { return true })
	if !slices.Equal(s.Queues, []string{env.queue}) || s.MaxInFlight != 3 || s.Credit != 3 || s.JobsHeld != 0 ||
		s.ConnectedAt.IsZero() || s.BrokerID == "" || s.Peer == "" {
		t.Errorf("the idle worker's stream = %+v, want queues [%s], max_in_flight 3, credit 3, no jobs held, a connection time, broker id and peer", s, env.queue)
	}

	// One job sent and running: the broker holds one credit less. (The
	// worker returns credit only once the broker's falls to half of
	// Concurrency, so 2 stays 2.)
	id := mustEnqueueJSON(env, "t", struct{}{})
	recv(t, started, "the worker to start the job")
	s = waitForStream("holding the job", func(s jobwire.WorkerStream) bool { return s.JobsHeld == 1 })
	if s.Credit != 2 {
		t.Errorf("with one job sent the stream = %+v, want credit 2", s)
	}
	close(release)
	env.waitForState(id, stateCompleted)

	// Other queues' listings leave it out.
	if streams, err := env.client.ListWorkers(env.ctx, uniqueQueue("list_workers_other")); err != nil || len(streams) != 0 {
		t.Errorf("ListWorkers(another queue) = %+v, %v; want none", streams, err)
	}
}

// GetQueueHistory answers typed samples of the queue named, and the time
// between two. The broker samples every 10s, and its first pass only sets a
// baseline, so a young broker may have none yet.
func TestClient_GetQueueHistory(t *testing.T) {
	t.Parallel()
	env := setup(t, "history")
	env.startGreeter(jobwire.WorkerConfig{})
	env.waitForState(mustEnqueueJSON(env, "greet", greetArgs{Name: "history"}), stateCompleted)
	h, err := env.client.GetQueueHistory(env.ctx, env.queue)
	if err != nil {
		t.Fatalf("GetQueueHistory: %v", err)
	}
	if h.Interval <= 0 {
		t.Errorf("GetQueueHistory interval %v, want a positive interval", h.Interval)
	}
	for i, s := range h.Samples {
		if s.Queue != env.queue || s.At.IsZero() || (i > 0 && s.At.Before(h.Samples[i-1].At)) {
			t.Errorf("sample %d = %+v, want queue %s, a time, oldest first", i, s, env.queue)
		}
	}
}
