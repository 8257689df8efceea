package jobwire

import "connectrpc.com/connect"

// Error is the error of a failed call: the broker's status, or one this
// client made up for a call that did not get through (UNAVAILABLE) or that
// it refused before sending (INVALID_ARGUMENT). Reach it with errors.As:
//
//	var e *jobwire.Error
//	if errors.As(err, &e) {
//		log.Print(e.Code(), e.Message()) // permission_denied, ci lacks scope admin (...)
//	}
//
// It is connect's error type, so code that already uses connect.Error sees
// the same value.
type Error = connect.Error

// Sentinels for the codes callers usually branch on, for errors.Is. A
// failed call's error matches the one of its code, through any wrapping:
//
//	if errors.Is(err, jobwire.ErrPermissionDenied) { ... }
//
// CodeOf gives the code of any error, these and the others alike.
var (
	// ErrUnauthenticated: no token (or client certificate), or one the
	// broker does not know.
	ErrUnauthenticated error = &codeSentinel{CodeUnauthenticated}
	// ErrPermissionDenied: the token lacks the scope the call needs, or may
	// not touch the queue. The message names which.
	ErrPermissionDenied error = &codeSentinel{CodePermissionDenied}
	// ErrNotFound: no such job (or schedule).
	ErrNotFound error = &codeSentinel{CodeNotFound}
	// ErrInvalidArgument: the request broke a documented limit.
	ErrInvalidArgument error = &codeSentinel{CodeInvalidArgument}
	// ErrFailedPrecondition: the job's state forbids the call (cancelling a
	// completed job, acking a lost lease).
	ErrFailedPrecondition error = &codeSentinel{CodeFailedPrecondition}
	// ErrUnavailable: no broker could be reached (a refused connection, a
	// failed TLS handshake, a draining broker, a connection that broke
	// mid-call), after the retries.
	ErrUnavailable error = &codeSentinel{CodeUnavailable}
	// ErrDeadlineExceeded: the call's deadline passed.
	ErrDeadlineExceeded error = &codeSentinel{CodeDeadlineExceeded}
)

// codeSentinel is an Err* value: it stands for a code, not for one error.
type codeSentinel struct{ code Code }

func (s *codeSentinel) Error() string { return "jobwire: " + s.code.String() }

// statusError is how a *connect.Error leaves this package's calls: the same
// text ("permission_denied: ..."), the *connect.Error reachable with
// errors.As, and errors.Is matching the Err* sentinel of its code, which
// *connect.Error alone cannot (it has no Is method).
type statusError struct{ ce *connect.Error }

func (e *statusError) Error() string { return e.ce.Error() }
func (e *statusError) Unwrap() error { return e.ce }

func (e *statusError) Is(target error) bool {
	s, ok := target.(*codeSentinel)
	return ok && s.code == e.ce.Code()
}

// withStatus gives a *connect.Error the Err* sentinels of its code, and
// returns any other error (nil included) unchanged.
func withStatus(err error) error {
	if ce, ok := err.(*connect.Error); ok {
		return &statusError{ce: ce}
	}
	return err
}
