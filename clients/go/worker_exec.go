package jobwire

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"
)

// activeJob is one leased attempt held by the worker.
type activeJob struct {
	token string
	job   *Job
	// leaseLen is how long each extension lasts; it sets the heartbeat pace.
	leaseLen time.Duration

	ctx    context.Context
	cancel context.CancelCauseFunc
	// span is the attempt's consumer span. It ends when the outcome is
	// known: at once for a nack, when the broker answers for an ack.
	span trace.Span

	// Guarded by workerRun.mu.
	nextBeat time.Time
	settled  bool

	lost            atomic.Bool
	cancelRequested atomic.Bool
}

func (r *workerRun) newActiveJob(lj *jobwirev1.LeasedJob) *activeJob {
	now := time.Now()
	aj := &activeJob{token: lj.GetLeaseToken(), job: newJob(lj.GetJob())}
	aj.leaseLen = r.leaseLength(lj, now)
	aj.nextBeat = now.Add(r.heartbeatInterval(aj))
	aj.ctx, aj.cancel = context.WithCancelCause(r.jobsCtx)
	if lj.GetJob().GetCancelRequested() {
		aj.cancelRequested.Store(true)
		aj.cancel(ErrJobCancelled)
	}
	return aj
}

// leaseLength works out the lease a job was given, in the broker's order of
// precedence: the job's own, the one this worker asked for, then what the
// expiry says (the queue's setting or the broker default). The expiry is on
// the broker's clock, so it is the last resort.
func (r *workerRun) leaseLength(lj *jobwirev1.LeasedJob, now time.Time) time.Duration {
	if d := lj.GetJob().GetLeaseDuration(); d != nil && d.AsDuration() > 0 {
		return d.AsDuration()
	}
	if r.cfg.LeaseDuration > 0 {
		return r.cfg.LeaseDuration
	}
	if exp := lj.GetLeaseExpiresAt(); exp != nil {
		if d := exp.AsTime().Sub(now); d > 0 {
			return d
		}
	}
	return assumedLease
}

func (r *workerRun) heartbeatInterval(aj *activeJob) time.Duration {
	if r.cfg.HeartbeatInterval > 0 {
		return r.cfg.HeartbeatInterval
	}
	return max(aj.leaseLen/3, minHeartbeatInterval)
}

// execute runs one attempt and reports its outcome. It owns one slot, which
// it frees once the outcome is handed off (ack queued, or nack answered).
func (r *workerRun) execute(aj *activeJob) {
	defer r.jobs.Done()
	defer r.releaseSlot()

	ctx, span := r.w.client.startConsumerSpan(aj.ctx, aj.job, r.cfg.WorkerID)
	aj.span = span
	err := r.callHandler(ctx, aj)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	if outcome := r.report(aj, err); outcome != "" {
		endConsumerSpan(span, outcome)
	}
}

// callHandler runs the job's handler, turning a panic into an ordinary
// (retryable) failure. A job whose context was cancelled before it started
// (cancelled while waiting for a slot, or the worker is shutting down) does
// not run.
func (r *workerRun) callHandler(ctx context.Context, aj *activeJob) (err error) {
	if aj.ctx.Err() != nil {
		return context.Cause(aj.ctx)
	}
	h := r.w.handler(aj.job.Type)
	if h == nil {
		return Permanent(fmt.Errorf("jobwire: no handler for job type %q on worker %s (it handles %q)",
			aj.job.Type, r.cfg.WorkerID, r.w.jobTypes()))
	}
	defer func() {
		if p := recover(); p != nil {
			err = &panicError{value: p, stack: debug.Stack()}
		}
	}()
	return h(ctx, aj.job)
}

// panicError is a recovered handler panic.
type panicError struct {
	value any
	stack []byte
}

func (e *panicError) Error() string {
	return fmt.Sprintf("jobwire: handler panicked: %v\n\n%s", e.value, e.stack)
}

// report acks or nacks the attempt as the handler's result dictates and
// returns the outcome for the span, or "" when an ack was queued: the acker
// ends the span once the broker has answered it.
func (r *workerRun) report(aj *activeJob, err error) string {
	cancelled := aj.cancelRequested.Load()
	switch {
	case aj.lost.Load():
		// The lease is gone; the broker would refuse either report.
		r.logger.Warn("jobwire job's lease was lost; its outcome is dropped", "job_id", aj.job.ID, "attempt", aj.job.Attempt)
		r.settle(aj)
		return outcomeLeaseLost
	case err == nil:
		// Even after a cancellation request an ack completes the job: the
		// handler returned, so the work is done (cancel_then_return).
		r.acks.add(aj)
		return ""
	}
	state, nerr := r.nack(aj, err)
	r.settle(aj)
	switch {
	case nerr != nil && CodeOf(nerr) == CodeFailedPrecondition:
		return outcomeLeaseLost
	case nerr != nil:
		return outcomeReportFailed
	case state == jobwirev1.JobState_JOB_STATE_CANCELLED || (cancelled && state == jobwirev1.JobState_JOB_STATE_UNSPECIFIED):
		return outcomeCancelled
	case state == jobwirev1.JobState_JOB_STATE_DEAD:
		return outcomeDead
	default:
		return outcomeRetry
	}
}

// failureMessage is the text recorded in the job's error history.
func failureMessage(aj *activeJob, err error) string {
	msg := err.Error()
	// A handler that returns ctx.Err() after its context was cancelled says
	// only "context canceled"; the cause says why.
	if cause := context.Cause(aj.ctx); cause != nil && errors.Is(err, context.Canceled) && !errors.Is(err, cause) {
		msg = cause.Error() + ": " + msg
	}
	return truncateUTF8(msg, maxNackMessageBytes)
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s[len(s)-min(len(s), utf8.UTFMax):]) {
		s = s[:len(s)-1]
	}
	return s
}

// transientCode reports codes worth retrying a worker call for: the broker
// could not serve it just now.
func transientCode(code connect.Code) bool {
	switch code {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded,
		connect.CodeResourceExhausted, connect.CodeAborted:
		return true
	}
	return false
}

// nack fails the attempt, retrying while the broker is unreachable. A stale
// token (FAILED_PRECONDITION) means the lease was lost: nothing to report.
func (r *workerRun) nack(aj *activeJob, herr error) (jobwirev1.JobState, error) {
	req := &jobwirev1.NackRequest{
		LeaseToken: aj.token,
		Error:      failureMessage(aj, herr),
		Permanent:  IsPermanent(herr),
	}
	if d, ok := retryDelay(herr); ok {
		req.RetryAfter = durationpb.New(d)
	}
	client := r.w.client
	for attempt := 0; ; attempt++ {
		ep := client.current()
		ctx, cancel := context.WithTimeout(r.rpcCtx, client.cfg.CallTimeout)
		res, err := ep.workers.Nack(ctx, connect.NewRequest(req))
		cancel()
		if err == nil {
			return res.Msg.GetState(), nil
		}
		err = asUnavailable(err)
		code := connect.CodeOf(err)
		if code == connect.CodeUnavailable {
			client.markFailed(ep, err)
		}
		if code == connect.CodeFailedPrecondition {
			r.logger.Warn("jobwire nack refused: the job's lease was lost", "job_id", aj.job.ID, "attempt", aj.job.Attempt)
			return jobwirev1.JobState_JOB_STATE_UNSPECIFIED, err
		}
		if !transientCode(code) || aj.lost.Load() {
			r.logger.Error("jobwire nack failed", "job_id", aj.job.ID, "error", err)
			return jobwirev1.JobState_JOB_STATE_UNSPECIFIED, err
		}
		t := time.NewTimer(r.retry.Delay(attempt))
		select {
		case <-t.C:
		case <-r.abandon:
			t.Stop()
			r.logger.Error("jobwire nack abandoned at shutdown", "job_id", aj.job.ID, "error", err)
			return jobwirev1.JobState_JOB_STATE_UNSPECIFIED, err
		}
	}
}

// settle forgets a job: its lease is no longer heartbeated. The job no
// longer counts against the 2 x Concurrency jobs a worker may hold, so
// credit withheld while acks lagged may go now (see grantLocked).
func (r *workerRun) settle(aj *activeJob) {
	r.mu.Lock()
	aj.settled = true
	delete(r.held, aj.token)
	r.grantLocked()
	r.mu.Unlock()
	aj.cancel(nil)
}
