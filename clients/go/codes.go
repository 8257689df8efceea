package jobwire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"connectrpc.com/connect"
)

// Code is the gRPC status code of a failed call. Its String form is the
// lower-case name ("permission_denied"), and every error a call returns
// starts with it: "permission_denied: token lacks the admin scope".
type Code = connect.Code

// The gRPC status codes, as connect names them.
const (
	CodeCanceled           = connect.CodeCanceled
	CodeUnknown            = connect.CodeUnknown
	CodeInvalidArgument    = connect.CodeInvalidArgument
	CodeDeadlineExceeded   = connect.CodeDeadlineExceeded
	CodeNotFound           = connect.CodeNotFound
	CodeAlreadyExists      = connect.CodeAlreadyExists
	CodePermissionDenied   = connect.CodePermissionDenied
	CodeResourceExhausted  = connect.CodeResourceExhausted
	CodeFailedPrecondition = connect.CodeFailedPrecondition
	CodeAborted            = connect.CodeAborted
	CodeOutOfRange         = connect.CodeOutOfRange
	CodeUnimplemented      = connect.CodeUnimplemented
	CodeInternal           = connect.CodeInternal
	CodeUnavailable        = connect.CodeUnavailable
	CodeDataLoss           = connect.CodeDataLoss
	CodeUnauthenticated    = connect.CodeUnauthenticated
)

// CodeOf returns the status code of err, looking through wrapping: the
// broker's answer for a failed call, CodeCanceled or CodeDeadlineExceeded
// for a context that ended, and CodeUnknown for any other error. The
// *Error itself is reachable with errors.As, and errors.Is matches a
// call's error against ErrPermissionDenied and the other Err* sentinels.
func CodeOf(err error) Code {
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		return ce.Code()
	case errors.Is(err, context.DeadlineExceeded):
		return CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return CodeCanceled
	}
	return CodeUnknown
}

// invalidArgument is the error of a call this client refuses before sending
// it, so that it names its code like the broker's refusals do.
func invalidArgument(format string, args ...any) error {
	return withStatus(connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("jobwire: "+format, args...)))
}

// asUnavailable turns an error that means "the connection to the broker
// broke" into UNAVAILABLE, and returns any other error unchanged.
//
// A broker that dies in the middle of a call (SIGKILL, a crashed machine)
// resets the connection, and connect reports that as CANCELED when the
// reset hits a read or write it was doing (it takes ECONNRESET and EPIPE
// for "the peer went away", which is right for a server), or as INTERNAL
// "protocol error: incomplete envelope" or UNKNOWN when the response was
// cut short. The broker never answered those calls; they simply did not get
// through, exactly as when the dial is refused (which connect already calls
// UNAVAILABLE). So they are retried the same way, on another broker when
// there is one, and a caller who sees one sees UNAVAILABLE.
func asUnavailable(err error) error {
	if err == nil || !isBrokenConnection(err) {
		return err
	}
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf("the connection to the broker broke mid-call: %w", err))
}

// isBrokenConnection reports an error that this side made up from a failed
// read or write on the connection, rather than one the broker sent or a
// context that ended.
func isBrokenConnection(err error) bool {
	var ce *connect.Error
	if !errors.As(err, &ce) || connect.IsWireError(ce) {
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	reset := errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
	switch ce.Code() {
	case connect.CodeCanceled:
		return reset
	case connect.CodeInternal, connect.CodeUnknown:
	default:
		return false
	}
	if reset || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return true
	}
	// net/http's HTTP/2 client reports a dropped connection with errors of
	// unexported types; their text is all there is to go on.
	msg := err.Error()
	for _, s := range []string{"client connection lost", "server sent GOAWAY", "connection reset by peer", "incomplete envelope"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
