package jobwire_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	jobwire "github.com/jobwire/jobwire/clients/go"
	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
	"github.com/jobwire/jobwire/clients/go/gen/jobwire/v1/jobwirev1connect"
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

// fakeAdmin refuses PauseQueue as a broker does a token without admin.
type fakeAdmin struct {
	jobwirev1connect.UnimplementedAdminServiceHandler
	refusal string
}

func (f *fakeAdmin) PauseQueue(context.Context, *connect.Request[jobwirev1.PauseQueueRequest]) (*connect.Response[jobwirev1.PauseQueueResponse], error) {
	return nil, connect.NewError(connect.CodePermissionDenied, errors.New(f.refusal))
}

// A refusal reads as in the TypeScript client: the lower-case code, ": ",
// and the broker's message unchanged. errors.Is matches its code's
// sentinel, through wrapping, and errors.As finds the *jobwire.Error with
// the code and the message alone.
func TestErrorTextAndSentinelsMatchTheTypeScriptClient(t *testing.T) {
	const refusal = "token ci lacks scope admin (needed by AdminService.PauseQueue)"
	mux := http.NewServeMux()
	mux.Handle(jobwirev1connect.NewAdminServiceHandler(&fakeAdmin{refusal: refusal}))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	client := newTestClient(t, srv.URL, nil)

	_, err := client.PauseQueue(context.Background(), "emails")
	if got, want := err.Error(), "permission_denied: "+refusal; got != want {
		t.Errorf("error text %q, want %q", got, want)
	}
	wrapped := fmt.Errorf("pause emails: %w", err)
	if !errors.Is(wrapped, jobwire.ErrPermissionDenied) || errors.Is(wrapped, jobwire.ErrUnauthenticated) {
		t.Errorf("errors.Is(wrapped, ErrPermissionDenied) = %v, ErrUnauthenticated = %v; want true, false",
			errors.Is(wrapped, jobwire.ErrPermissionDenied), errors.Is(wrapped, jobwire.ErrUnauthenticated))
	}
	var e *jobwire.Error
	if !errors.As(wrapped, &e) || e.Code() != jobwire.CodePermissionDenied || e.Message() != refusal {
		t.Errorf("errors.As found %v, want code permission_denied and message %q", e, refusal)
	}

	// A call that never got through matches ErrUnavailable.
	_, err = newTestClient(t, "http://127.0.0.1:1", &jobwire.ClientConfig{RetryAttempts: 1}).PauseQueue(context.Background(), "emails")
	if !errors.Is(err, jobwire.ErrUnavailable) || !strings.HasPrefix(err.Error(), "unavailable: ") {
		t.Errorf("PauseQueue on a closed port: %v, want ErrUnavailable named in its text", err)
	}
	// So does a call this client refuses before sending, with its own code.
	if _, err := client.EnqueueMany(context.Background(), nil); !errors.Is(err, jobwire.ErrInvalidArgument) {
		t.Errorf("EnqueueMany(nil): %v, want ErrInvalidArgument", err)
	}
}
