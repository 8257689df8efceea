package jobwire_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	jobwire "github.com/jobwire/jobwire/clients/go"
)

// A failed call's error names its code in its text ("not_found: ..."), and
// jobwire.CodeOf or errors.As recover the code, through wrapping too.
func TestErrorsNameTheirCode(t *testing.T) {
	t.Parallel()
	env := setup(t, "error_codes")

	_, err := env.client.GetJob(env.ctx, "9223372036854775807")
	if !strings.HasPrefix(err.Error(), "not_found: ") {
		t.Errorf("GetJob(unknown) error text %q does not start with its code", err)
	}
	wrapped := fmt.Errorf("load the invoice job: %w", err)
	if jobwire.CodeOf(wrapped) != jobwire.CodeNotFound {
		t.Errorf("CodeOf(wrapped) = %v, want not_found", jobwire.CodeOf(wrapped))
	}
	var ce *connect.Error
	if !errors.As(wrapped, &ce) || ce.Code() != jobwire.CodeNotFound {
		t.Errorf("errors.As found %v, want a *connect.Error with not_found", ce)
	}

	// A call the client refuses before sending names a code too.
	_, err = env.client.EnqueueMany(env.ctx, nil)
	if jobwire.CodeOf(err) != jobwire.CodeInvalidArgument || !strings.HasPrefix(err.Error(), "invalid_argument: ") {
		t.Errorf("EnqueueMany(nil) error = %v, want invalid_argument", err)
	}

	// So does the broker's validation.
	_, err = env.client.EnqueueJSON(env.ctx, "not a queue name!", "t", struct{}{})
	if jobwire.CodeOf(err) != jobwire.CodeInvalidArgument || !strings.HasPrefix(err.Error(), "invalid_argument: ") {
		t.Errorf("Enqueue(bad queue) error = %v, want invalid_argument", err)
	}

	// A caller's deadline is DEADLINE_EXCEEDED.
	ctx, cancel := context.WithTimeout(env.ctx, time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	_, err = env.client.GetJob(ctx, "1")
	if jobwire.CodeOf(err) != jobwire.CodeDeadlineExceeded {
		t.Errorf("GetJob(expired context) error = %v (code %v), want deadline_exceeded", err, jobwire.CodeOf(err))
	}
	if jobwire.CodeOf(errors.New("plain")) != jobwire.CodeUnknown {
		t.Error("CodeOf(plain error) is not unknown")
	}
}
