package jobwire_test

// The flow-control scenarios of test/conformance/scenarios.md: pause and
// resume, per-key limits, ordering keys and partial queue configuration.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
)

func TestConformanceFlow(t *testing.T) {
	t.Run("pause_and_resume", func(t *testing.T) {
		t.Parallel()
		env := setup(t, "pause_and_resume")
		ran := make(chan string, 1)
		env.startWorker(jobwire.WorkerConfig{Concurrency: 2}, func(w *jobwire.Worker) {
			w.Handle("paused", func(ctx context.Context, job *jobwire.Job) error {
				ran <- job.ID
				return nil
			})
		})

		cfg, err := env.client.PauseQueue(env.ctx, env.queue)
		if err != nil {
			t.Fatalf("PauseQueue: %v", err)
		}
		if !cfg.Paused {
			t.Errorf("PauseQueue answered a config with Paused = false")
		}
		id := mustEnqueueJSON(env, "paused", struct{}{})

		// The pause takes hold within a second; watch for 1.5s that the
		// job is not leased.
		watch := time.NewTimer(1500 * time.Millisecond)
		select {
		case got := <-ran:
			watch.Stop()
			t.Fatalf("job %s ran on a paused queue", got)
		case <-watch.C:
		}
		job, err := env.client.GetJob(env.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if job.GetState() != jobwirev1.JobState_JOB_STATE_AVAILABLE {
			t.Errorf("the job on the paused queue is %v, want AVAILABLE", job.GetState())
		}
		stats, err := env.client.GetQueueStats(env.ctx, env.queue)
		if err != nil {
			t.Fatalf("GetQueueStats: %v", err)
		}
		if len(stats) != 1 || !stats[0].Paused {
			t.Errorf("GetQueueStats = %+v, want the queue with Paused = true", stats)
		}

		if cfg, err = env.client.ResumeQueue(env.ctx, env.queue); err != nil {
			t.Fatalf("ResumeQueue: %v", err)
		}
		if cfg.Paused {
			t.Errorf("ResumeQueue answered a config with Paused = true")
		}
		if got := recv(t, ran, "the job to run after ResumeQueue"); got != id {
			t.Errorf("ran job %s, want %s", got, id)
		}
		env.waitForState(id, stateCompleted)
	})

	t.Run("per_key_limit", func(t *testing.T) {
		t.Parallel()
		env := setup(t, "per_key_limit")
		if _, err := env.client.SetQueueConfig(env.ctx, env.queue, jobwire.QueueConfigUpdate{MaxRunningPerKey: new(1)}); err != nil {
			t.Fatalf("SetQueueConfig: %v", err)
		}
		type start struct{ id, key string }
		var (
			mu       sync.Mutex
			running  = map[string]int{}
			overlaps []string
			release  = map[string]chan struct{}{}
		)
		started := make(chan start, 4)
		type keyed struct {
			Key string `json:"key"`
		}
		env.startWorker(jobwire.WorkerConfig{Concurrency: 4}, func(w *jobwire.Worker) {
			// The payload names the key too, so that the limit is checked
			// even if the leased job did not carry its key.
			jobwire.HandleJSON(w, "keyed", func(ctx context.Context, job *jobwire.Job, args keyed) error {
				key := args.Key
				mu.Lock()
				running[key]++
				if key == "k" && running["k"] > 1 {
					overlaps = append(overlaps, job.ID)
				}
				gate := release[job.ID]
				mu.Unlock()
				if job.ConcurrencyKey != key {
					t.Errorf("job %s was leased with concurrency_key %q, want %q", job.ID, job.ConcurrencyKey, key)
				}
				started <- start{job.ID, key}
				select {
				case <-gate:
				case <-ctx.Done():
				}
				mu.Lock()
				running[key]--
				mu.Unlock()
				return nil
			})
		})

		specs := make([]*jobwirev1.JobSpec, 0, 4)
		for _, key := range []string{"k", "k", "k", "other"} {
			spec, err := jobwire.NewJSONJob(env.queue, "keyed", keyed{Key: key}, jobwire.WithConcurrencyKey(key))
			if err != nil {
				t.Fatal(err)
			}
			specs = append(specs, spec)
		}
		// Gates exist before the jobs do, so every handler finds its own.
		ids := make([]string, len(specs))
		mu.Lock()
		results, err := env.client.EnqueueMany(env.ctx, specs)
		if err == nil {
			for i, r := range results {
				ids[i] = r.JobID
				release[r.JobID] = make(chan struct{})
			}
		}
		mu.Unlock()
		if err != nil {
			t.Fatalf("EnqueueMany: %v", err)
		}

		// The "other" job and one "k" job start; the other "k" jobs wait.
		var heldK string
		sawOther := false
		for heldK == "" || !sawOther {
			s := recv(t, started, "the other job and one k job to start")
			switch {
			case s.key == "other":
				sawOther = true
			case heldK != "":
				t.Fatalf("k job %s started while k job %s was running; max_running_per_key is 1", s.id, heldK)
			default:
				heldK = s.id
			}
		}
		// Release the k jobs one at a time: each release lets the next start.
		for range 2 {
			mu.Lock()
			close(release[heldK])
			mu.Unlock()
			s := recv(t, started, "the next k job to start after one was released")
			if s.key != "k" {
				t.Fatalf("job %s with key %q started, want a k job", s.id, s.key)
			}
			heldK = s.id
		}
		mu.Lock()
		close(release[heldK])
		close(release[ids[3]])
		mu.Unlock()
		for _, id := range ids {
			env.waitForState(id, stateCompleted)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(overlaps) > 0 {
			t.Errorf("k jobs %v started while another k job ran; max_running_per_key is 1", overlaps)
		}
	})

	t.Run("ordering_key", func(t *testing.T) {
		t.Parallel()
		env := setup(t, "ordering_key")
		var (
			mu     sync.Mutex
			events []string
		)
		record := func(what string, job *jobwire.Job, n int) {
			mu.Lock()
			events = append(events, fmt.Sprintf("%s %d/%d", what, n, job.Attempt))
			mu.Unlock()
		}
		env.startWorker(jobwire.WorkerConfig{Concurrency: 4}, func(w *jobwire.Worker) {
			jobwire.HandleJSON(w, "ordered", func(ctx context.Context, job *jobwire.Job, n int) error {
				record("start", job, n)
				defer record("end", job, n)
				if n == 1 && job.Attempt == 1 {
					return errors.New("job 1 fails its first attempt")
				}
				return nil
			})
		})

		specs := make([]*jobwirev1.JobSpec, 3)
		for i := range specs {
			spec, err := jobwire.NewJSONJob(env.queue, "ordered", i+1,
				jobwire.WithOrderingKey("o"), jobwire.WithRetry(50*time.Millisecond, 0, 0))
			if err != nil {
				t.Fatal(err)
			}
			specs[i] = spec
		}
		results, err := env.client.EnqueueMany(env.ctx, specs)
		if err != nil {
			t.Fatalf("EnqueueMany: %v", err)
		}
		for _, r := range results {
			env.waitForState(r.JobID, stateCompleted)
		}

		// Each attempt ends before the next starts, in enqueue order, with
		// job 1's retry ahead of jobs 2 and 3.
		want := []string{
			"start 1/1", "end 1/1", "start 1/2", "end 1/2",
			"start 2/1", "end 2/1", "start 3/1", "end 3/1",
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(events, want) {
			t.Errorf("handler events = %q\nwant             %q", events, want)
		}
	})

	t.Run("queue_config_partial", func(t *testing.T) {
		t.Parallel()
		env := setup(t, "queue_config_partial")
		if _, err := env.client.SetQueueConfig(env.ctx, env.queue, jobwire.QueueConfigUpdate{MaxRunning: new(5)}); err != nil {
			t.Fatalf("SetQueueConfig(max_running): %v", err)
		}
		if _, err := env.client.SetQueueConfig(env.ctx, env.queue, jobwire.QueueConfigUpdate{MaxAttempts: new(3)}); err != nil {
			t.Fatalf("SetQueueConfig(max_attempts): %v", err)
		}
		cfg, err := env.client.GetQueueConfig(env.ctx, env.queue)
		if err != nil {
			t.Fatalf("GetQueueConfig: %v", err)
		}
		if cfg.MaxRunning == nil || *cfg.MaxRunning != 5 || cfg.MaxAttempts == nil || *cfg.MaxAttempts != 3 {
			t.Errorf("config = max_running %v, max_attempts %v; want 5 and 3", deref(cfg.MaxRunning), deref(cfg.MaxAttempts))
		}
	})
}

// deref shows an optional setting in a failure message.
func deref[T any](p *T) any {
	if p == nil {
		return "unset"
	}
	return *p
}
