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
	requireFlowControl(t, env)
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

// ListWorkers shows a running worker's Lease stream.
func TestClient_ListWorkersShowsTheLeaseStream(t *testing.T) {
	t.Parallel()
	env := setup(t, "list_workers")
	if _, err := env.client.ListWorkers(env.ctx, env.queue); jobwire.CodeOf(err) == jobwire.CodeUnimplemented {
		t.Skipf("the broker does not implement AdminService.ListWorkers yet (%v)", err)
	} else if err != nil {
		t.Fatalf("ListWorkers: %v", err)
	}
	w := env.startWorker(jobwire.WorkerConfig{Concurrency: 3}, func(w *jobwire.Worker) {
		w.Handle("t", func(ctx context.Context, job *jobwire.Job) error { return nil })
	})
	deadline := time.Now().Add(waitTimeout)
	for {
		streams, err := env.client.ListWorkers(env.ctx, env.queue)
		if err != nil {
			t.Fatalf("ListWorkers: %v", err)
		}
		i := slices.IndexFunc(streams, func(s jobwire.WorkerStream) bool { return s.WorkerID == w.ID() })
		if i >= 0 {
			s := streams[i]
			if !slices.Equal(s.Queues, []string{env.queue}) || s.MaxInFlight != 3 || s.ConnectedAt.IsZero() {
				t.Errorf("the worker's stream = %+v, want queues [%s], max_in_flight 3 and a connection time", s, env.queue)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ListWorkers(%s) = %+v after %v, want worker %s", env.queue, streams, waitTimeout, w.ID())
		}
		time.Sleep(pollInterval)
	}
}
