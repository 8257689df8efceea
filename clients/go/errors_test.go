package jobwire

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
)

func TestPermanent(t *testing.T) {
	base := errors.New("bad input")
	if Permanent(nil) != nil {
		t.Error("Permanent(nil) != nil")
	}
	p := Permanent(base)
	if !IsPermanent(p) || !IsPermanent(fmt.Errorf("wrapped: %w", p)) {
		t.Error("IsPermanent does not see a (wrapped) Permanent error")
	}
	if IsPermanent(base) {
		t.Error("IsPermanent(plain error) = true")
	}
	if !errors.Is(p, base) || p.Error() != "bad input" {
		t.Errorf("Permanent changed the error: %q, errors.Is = %v", p.Error(), errors.Is(p, base))
	}
}

func TestRetryAfter(t *testing.T) {
	if RetryAfter(time.Second, nil) != nil {
		t.Error("RetryAfter(d, nil) != nil")
	}
	err := fmt.Errorf("ctx: %w", RetryAfter(time.Minute, errors.New("rate limited")))
	if d, ok := retryDelay(err); !ok || d != time.Minute {
		t.Errorf("retryDelay = %v, %v; want 1m, true", d, ok)
	}
	if d, _ := retryDelay(RetryAfter(-time.Second, errors.New("x"))); d != 0 {
		t.Errorf("negative delay became %v, want 0", d)
	}
	if _, ok := retryDelay(errors.New("plain")); ok {
		t.Error("retryDelay found a delay in a plain error")
	}
}

func TestTruncateUTF8KeepsValidText(t *testing.T) {
	s := strings.Repeat("é", 10) // 2 bytes each
	for n := 0; n <= len(s); n++ {
		got := truncateUTF8(s, n)
		if len(got) > n || !utf8.ValidString(got) || len(got) < n-1 {
			t.Fatalf("truncateUTF8(%d) = %q (%d bytes)", n, got, len(got))
		}
	}
	if truncateUTF8("short", 100) != "short" {
		t.Error("truncateUTF8 changed a short string")
	}
}

func TestFailureMessageNamesTheCancellation(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	aj := &activeJob{ctx: ctx, cancel: cancel}
	if got := failureMessage(aj, errors.New("boom")); got != "boom" {
		t.Errorf("failureMessage = %q, want the handler's message", got)
	}
	cancel(ErrJobCancelled)
	if got := failureMessage(aj, ctx.Err()); got != "jobwire: job cancelled: context canceled" {
		t.Errorf("failureMessage(ctx.Err()) = %q", got)
	}
	if got := failureMessage(aj, context.Cause(ctx)); got != ErrJobCancelled.Error() {
		t.Errorf("failureMessage(cause) = %q", got)
	}
}

func TestWithStatusLeavesOtherErrorsAlone(t *testing.T) {
	if withStatus(nil) != nil {
		t.Error("withStatus(nil) != nil")
	}
	plain := errors.New("plain")
	if withStatus(plain) != plain {
		t.Error("withStatus changed an error that is no *connect.Error")
	}
	ce := connect.NewError(connect.CodeNotFound, errors.New("job 7 not found"))
	err := withStatus(ce)
	if err.Error() != ce.Error() || !errors.Is(err, ErrNotFound) || !errors.Is(err, ce) || errors.Is(err, ErrUnavailable) {
		t.Errorf("withStatus(not_found) = %q; Is(ErrNotFound) %v, Is(ce) %v, Is(ErrUnavailable) %v",
			err, errors.Is(err, ErrNotFound), errors.Is(err, ce), errors.Is(err, ErrUnavailable))
	}
	if ErrPermissionDenied.Error() != "jobwire: permission_denied" {
		t.Errorf("ErrPermissionDenied reads %q", ErrPermissionDenied)
	}
}
