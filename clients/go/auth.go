package jobwire

import (
	"context"
	"errors"
	"strings"
	"unicode"

	"connectrpc.com/connect"
	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
	"github.com/jobwire/jobwire/clients/go/gen/jobwire/v1/jobwirev1connect"
)

// bearerAuth sets "authorization: Bearer <token>" on every call the Client
// makes: unary calls and streams (the worker's Lease stream) alike.
type bearerAuth struct {
	header string // "Bearer <token>"
}

var _ connect.Interceptor = (*bearerAuth)(nil)

// newBearerAuth checks token and returns the interceptor that sends it. The
// broker reads the header as "Bearer" and one run of non-space characters,
// so a token with spaces or control characters could never be accepted.
func newBearerAuth(token string) (*bearerAuth, error) {
	if strings.ContainsFunc(token, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return nil, errors.New("jobwire: ClientConfig.Token must not contain spaces or control characters")
	}
	return &bearerAuth{header: "Bearer " + token}, nil
}

func (a *bearerAuth) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			req.Header().Set("Authorization", a.header)
		}
		return next(ctx, req)
	}
}

func (a *bearerAuth) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		// The request headers go out with the first Send (or CloseRequest),
		// so setting them here is in time.
		conn.RequestHeader().Set("Authorization", a.header)
		return conn
	}
}

// WrapStreamingHandler leaves handlers alone: the interceptor is only ever
// installed on clients.
func (a *bearerAuth) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// Identity is the caller as the broker sees it (AdminService.WhoAmI).
type Identity struct {
	// AuthEnabled is false when the broker runs without authentication:
	// every call is allowed, and Name is empty.
	AuthEnabled bool
	// Name is the token's name from the tokens file, or the name of the
	// certificates entry that the client certificate matched; never the
	// secret.
	Name string
	// Scopes are of "enqueue", "work", "read" and "admin".
	Scopes []string
	// Queues are the queue name patterns the caller may touch ("*": all).
	Queues []string
}

// WhoAmI asks the broker who this Client is: which token (or client
// certificate) it presents, with what scopes, on which queues. Any
// authenticated caller may ask, so it is a cheap check of a deployment's
// credentials at startup.
func (c *Client) WhoAmI(ctx context.Context) (*Identity, error) {
	res, err := callUnary(ctx, c, onAdmin(jobwirev1connect.AdminServiceClient.WhoAmI), &jobwirev1.WhoAmIRequest{})
	if err != nil {
		return nil, err
	}
	return &Identity{AuthEnabled: res.GetAuthEnabled(), Name: res.GetName(), Scopes: res.GetScopes(), Queues: res.GetQueues()}, nil
}
