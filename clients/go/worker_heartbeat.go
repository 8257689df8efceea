package jobwire

import (
	"context"
	"time"

	"connectrpc.com/connect"
	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
)

// minHeartbeatCallTimeout is the shortest deadline given to a Heartbeat call.
const minHeartbeatCallTimeout = time.Second

func (r *workerRun) wakeHeartbeater() {
	select {
	case r.hbWake <- struct{}{}:
	default:
	}
}

// heartbeatLoop extends every held lease in one Heartbeat call whenever the
// earliest of them is due (a third of its lease after the last extension,
// by default). A batch re-extends every lease, so the leases fall into step
// and the worker makes about one call per interval however many jobs it
// holds. Cancellation requests and lost leases cancel the jobs' contexts.
func (r *workerRun) heartbeatLoop(stop <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	failures := 0
	for {
		var due <-chan time.Time
		if next, ok := r.nextHeartbeat(); ok {
			timer.Reset(max(time.Until(next), 0))
			due = timer.C
		}
		select {
		case <-stop:
			return
		case <-r.hbWake:
			timer.Stop()
			continue
		case <-due:
		}
		if beats := r.heartbeatBatch(); len(beats) > 0 {
			r.heartbeat(beats, &failures)
		}
	}
}

// nextHeartbeat returns when the earliest held lease is due.
func (r *workerRun) nextHeartbeat() (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var next time.Time
	found := false
	for _, aj := range r.held {
		if aj.lost.Load() {
			continue
		}
		if !found || aj.nextBeat.Before(next) {
			next, found = aj.nextBeat, true
		}
	}
	return next, found
}

// heartbeatBatch returns every held job whose lease is still ours.
func (r *workerRun) heartbeatBatch() []*activeJob {
	r.mu.Lock()
	defer r.mu.Unlock()
	beats := make([]*activeJob, 0, len(r.held))
	for _, aj := range r.held {
		if !aj.lost.Load() {
			beats = append(beats, aj)
		}
	}
	return beats
}

func (r *workerRun) heartbeat(beats []*activeJob, failures *int) {
	tokens := make([]string, len(beats))
	byToken := make(map[string]*activeJob, len(beats))
	shortest := time.Duration(0)
	for i, aj := range beats {
		tokens[i] = aj.token
		byToken[aj.token] = aj
		if iv := r.heartbeatInterval(aj); shortest == 0 || iv < shortest {
			shortest = iv
		}
	}
	// A heartbeat that takes longer than the interval is as good as lost.
	timeout := min(max(shortest, minHeartbeatCallTimeout), r.w.client.cfg.CallTimeout)
	ep := r.w.client.current()
	ctx, cancel := context.WithTimeout(r.rpcCtx, timeout)
	res, err := ep.workers.Heartbeat(ctx, connect.NewRequest(&jobwirev1.HeartbeatRequest{LeaseTokens: tokens}))
	cancel()
	now := time.Now()

	if err != nil {
		// The next try goes to another broker, if there is one: a lease
		// lives in the database, so any replica can extend it.
		if err = asUnavailable(err); connect.CodeOf(err) == connect.CodeUnavailable {
			r.w.client.markFailed(ep, err)
		}
		// Try again soon, well inside the lease, without hammering a broker
		// that is down.
		delay := r.retry.Delay(*failures)
		*failures++
		r.logger.Warn("jobwire heartbeat failed", "error", err, "leases", len(tokens), "retry_in", delay)
		r.mu.Lock()
		for _, aj := range beats {
			aj.nextBeat = now.Add(min(delay, r.heartbeatInterval(aj)/2))
		}
		r.mu.Unlock()
		return
	}
	*failures = 0

	var lost, cancelled []*activeJob
	r.mu.Lock()
	for _, aj := range beats {
		aj.nextBeat = now.Add(r.heartbeatInterval(aj))
	}
	for i, hr := range res.Msg.GetResults() {
		token := hr.GetLeaseToken()
		if token == "" && i < len(tokens) {
			token = tokens[i]
		}
		aj := byToken[token]
		if aj == nil {
			continue
		}
		if hr.GetLost() {
			if !aj.lost.Swap(true) && !aj.settled {
				lost = append(lost, aj)
			}
			continue
		}
		if hr.GetCancelRequested() && !aj.cancelRequested.Swap(true) {
			cancelled = append(cancelled, aj)
		}
	}
	r.mu.Unlock()

	for _, aj := range lost {
		r.logger.Warn("jobwire lease lost; cancelling the job", "job_id", aj.job.ID, "attempt", aj.job.Attempt)
		aj.cancel(ErrLeaseLost)
	}
	for _, aj := range cancelled {
		r.logger.Info("jobwire job cancellation requested", "job_id", aj.job.ID)
		aj.cancel(ErrJobCancelled)
	}
}
