package jobwire

import (
	"errors"
	"time"
)

var (
	// ErrJobCancelled is the cause of a job context's cancellation when
	// CancelJob was called on the running job. The handler should stop and
	// return; the broker then ends the job CANCELLED.
	ErrJobCancelled = errors.New("jobwire: job cancelled")

	// ErrLeaseLost is the cause of a job context's cancellation when the
	// broker reports that the lease is gone (it expired, or another worker
	// holds the job now). The handler's outcome is then discarded.
	ErrLeaseLost = errors.New("jobwire: lease lost")

	// ErrWorkerShutdown is the cause of a job context's cancellation when the
	// worker's shutdown timeout ran out before the handler returned.
	ErrWorkerShutdown = errors.New("jobwire: worker shut down before the job finished")
)

// permanentError marks an error as not worth retrying.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as permanent: when a handler returns it (or an error
// wrapping it), the job skips its remaining attempts and goes to DEAD.
// Permanent(nil) is nil. The message recorded in the job's error history is
// err.Error(), unchanged.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or any error it wraps, was marked with
// Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// retryAfterError carries a handler's wish for when the next attempt runs.
type retryAfterError struct {
	err   error
	delay time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// RetryAfter fails the attempt with err and asks for the next attempt to run
// after delay instead of after the job's retry backoff. RetryAfter(d, nil) is
// nil. Wrapping a RetryAfter error with Permanent makes the job DEAD anyway.
func RetryAfter(delay time.Duration, err error) error {
	if err == nil {
		return nil
	}
	return &retryAfterError{err: err, delay: max(delay, 0)}
}

// retryDelay returns the delay requested through RetryAfter, if any.
func retryDelay(err error) (time.Duration, bool) {
	var r *retryAfterError
	if errors.As(err, &r) {
		return r.delay, true
	}
	return 0, false
}
