package jobwire

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
	"github.com/jobwire/jobwire/clients/go/gen/jobwire/v1/jobwirev1connect"
	"github.com/jobwire/jobwire/clients/go/internal/backoff"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Defaults for ClientConfig.
const (
	// DefaultCallTimeout bounds each unary call whose context has no deadline.
	DefaultCallTimeout = 10 * time.Second
	// DefaultRetryAttempts is how many rounds of tries a unary call gets
	// when the broker answers UNAVAILABLE (it is restarting or draining). A
	// round tries every broker the Client was given once, so with one
	// broker it is one try.
	DefaultRetryAttempts = 5
	// DefaultRetryInitialBackoff and DefaultRetryMaxBackoff shape the
	// jittered exponential wait between rounds: about 50ms, 100ms, 200ms,
	// 400ms, so five rounds span roughly a second.
	DefaultRetryInitialBackoff = 50 * time.Millisecond
	DefaultRetryMaxBackoff     = 2 * time.Second
	// DefaultMaxMessageBytes caps a message received from the broker. A Lease
	// response or a ListJobs page may carry many jobs of up to 1 MiB each.
	DefaultMaxMessageBytes = 64 << 20
)

// ClientConfig configures a Client. The zero value (or nil) uses the
// defaults above.
type ClientConfig struct {
	// HTTPClient carries the calls. Nil means NewH2CClient() (with Resolver),
	// which the Client closes in Close.
	HTTPClient connect.HTTPClient
	// TLS configures https:// brokers for the default HTTPClient: set
	// RootCAs to trust a private CA, and Certificates to present a client
	// certificate to a broker that asks for one (mTLS; with a tokens file
	// the certificate's subject can stand in for a token). Nil means the
	// system's roots and no client certificate. HTTP/2 is negotiated
	// through ALPN whatever NextProtos says. A broker whose certificate
	// does not verify answers every call with UNAVAILABLE, after the
	// retries.
	TLS *tls.Config
	// Resolver looks up broker host names for the default HTTPClient. Nil
	// means net.DefaultResolver. Every address a name resolves to is tried
	// when a connection is made, so one name with a DNS record per broker
	// replica fails over too.
	Resolver *net.Resolver
	// ShuffleBrokers starts the Client on a random one of the brokers it was
	// given rather than the first, so that a fleet sharing one list spreads
	// over the replicas (as libpq's load_balance_hosts=random does).
	ShuffleBrokers bool
	// CallTimeout bounds each unary call whose context has no deadline.
	CallTimeout time.Duration
	// RetryAttempts is the number of rounds of tries of a unary call
	// answered with UNAVAILABLE; 1 tries each broker once and does not wait.
	RetryAttempts int
	// RetryInitialBackoff and RetryMaxBackoff shape the waits between tries.
	RetryInitialBackoff time.Duration
	RetryMaxBackoff     time.Duration
	// MaxMessageBytes caps a message received from the broker.
	MaxMessageBytes int
	// Token, when set, is sent as "authorization: Bearer <token>" on every
	// call, streams included (so a Worker built on this Client sends it on
	// its Lease stream and its Heartbeat, Ack and Nack calls). Set it for a
	// broker started with JOBWIRE_AUTH_TOKENS or JOBWIRE_AUTH_FILE; without
	// it (or a client certificate the tokens file names) such a broker
	// answers UNAUTHENTICATED. A token the broker knows but whose scopes or
	// queues do not cover a call gets PERMISSION_DENIED, naming what is
	// missing. Neither is retried. Empty sends no authorization header;
	// when a token is sent it wins over the client certificate.
	Token string
	// Options are added to the connect client options (after WithGRPC).
	// The Token's interceptor comes after them, so it is the innermost and
	// its header is the one sent.
	Options []connect.ClientOption
	// TracerProvider makes the spans. Nil means otel.GetTracerProvider(),
	// looked up at each call.
	TracerProvider trace.TracerProvider
	// Propagator carries trace context in job headers. Nil means
	// otel.GetTextMapPropagator(), looked up at each call.
	Propagator propagation.TextMapPropagator
	// Logger receives the client's and its workers' logs. Nil means
	// slog.Default().
	Logger *slog.Logger
}

func (c *ClientConfig) withDefaults() ClientConfig {
	var out ClientConfig
	if c != nil {
		out = *c
	}
	if out.CallTimeout <= 0 {
		out.CallTimeout = DefaultCallTimeout
	}
	if out.RetryAttempts <= 0 {
		out.RetryAttempts = DefaultRetryAttempts
	}
	if out.RetryInitialBackoff <= 0 {
		out.RetryInitialBackoff = DefaultRetryInitialBackoff
	}
	if out.RetryMaxBackoff <= 0 {
		out.RetryMaxBackoff = DefaultRetryMaxBackoff
	}
	if out.MaxMessageBytes <= 0 {
		out.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	return out
}

// Client talks to a jobwire broker, or to one of several broker replicas
// that share a database. It is safe for concurrent use; make one and share
// it.
type Client struct {
	cfg       ClientConfig
	ownHTTP   *http.Client // set when the Client made its own transport
	retry     backoff.Policy
	logger    *slog.Logger
	endpoints []*endpoint
	// preferred indexes the endpoint calls go to now; see markFailed.
	preferred atomic.Uint32
}

// NewClient returns a Client for the broker at target, a base URL such as
// "http://127.0.0.1:50051" (the broker's default port). The gRPC protocol
// is used over HTTP/2.
//
// For broker replicas on one database, give several base URLs separated by
// commas, "http://10.0.0.1:50051,http://10.0.0.2:50051", or one host name
// with a DNS record per replica. Calls go to the first broker until it
// fails, then to the next (see the package documentation on failover).
func NewClient(target string, cfg *ClientConfig) (*Client, error) {
	urls, err := parseBrokers(target)
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg.withDefaults()}
	var auth *bearerAuth
	if c.cfg.Token != "" {
		if auth, err = newBearerAuth(c.cfg.Token); err != nil {
			return nil, err
		}
	}
	c.logger = c.cfg.Logger
	c.retry = backoff.Policy{Initial: c.cfg.RetryInitialBackoff, Max: c.cfg.RetryMaxBackoff}
	httpClient := c.cfg.HTTPClient
	if httpClient == nil {
		c.ownHTTP = newH2CClient(c.cfg.Resolver, c.cfg.TLS)
		httpClient = c.ownHTTP
	}
	opts := append([]connect.ClientOption{
		connect.WithGRPC(),
		connect.WithReadMaxBytes(c.cfg.MaxMessageBytes),
	}, c.cfg.Options...)
	if auth != nil {
		opts = append(opts, connect.WithInterceptors(auth))
	}
	c.makeEndpoints(urls, httpClient, opts)
	return c, nil
}

// Close releases the Client's idle connections. Calls in flight are not
// interrupted.
func (c *Client) Close() {
	if c.ownHTTP != nil {
		c.ownHTTP.CloseIdleConnections()
	}
}

// JobService returns the generated JobService client of the current broker,
// for calls this package does not wrap. It has no retries, failover or
// default deadline.
func (c *Client) JobService() jobwirev1connect.JobServiceClient { return c.current().jobs }

// WorkerService returns the generated WorkerService client of the current
// broker, for building a worker runtime of your own.
func (c *Client) WorkerService() jobwirev1connect.WorkerServiceClient { return c.current().workers }

// AdminService returns the generated AdminService client of the current
// broker.
func (c *Client) AdminService() jobwirev1connect.AdminServiceClient { return c.current().admin }

// EnqueueResult is the outcome of enqueuing one JobSpec.
type EnqueueResult struct {
	JobID string
	// Duplicate is true when the spec's idempotency key matched a live job:
	// nothing was created and JobID is the first job's id.
	Duplicate bool
}

// Enqueue enqueues one job. It sets the W3C trace context headers on
// spec.Headers (see the package documentation on tracing).
//
// A call answered UNAVAILABLE is retried. Should the broker have stored the
// job before the answer was lost, a retry enqueues it again; give the spec an
// idempotency key to make that impossible.
func (c *Client) Enqueue(ctx context.Context, spec *jobwirev1.JobSpec) (EnqueueResult, error) {
	res, err := c.EnqueueMany(ctx, []*jobwirev1.JobSpec{spec})
	if err != nil {
		return EnqueueResult{}, err
	}
	return res[0], nil
}

// EnqueueJSON enqueues one job whose payload is v encoded as JSON.
func (c *Client) EnqueueJSON(ctx context.Context, queue, jobType string, v any, opts ...JobOption) (EnqueueResult, error) {
	spec, err := NewJSONJob(queue, jobType, v, opts...)
	if err != nil {
		return EnqueueResult{}, err
	}
	return c.Enqueue(ctx, spec)
}

// EnqueueMany enqueues specs in one call, all or nothing. The results are in
// the order of specs.
func (c *Client) EnqueueMany(ctx context.Context, specs []*jobwirev1.JobSpec) ([]EnqueueResult, error) {
	if len(specs) == 0 {
		return nil, invalidArgument("EnqueueMany needs at least one job")
	}
	for i, s := range specs {
		if s == nil {
			return nil, invalidArgument("job spec %d is nil", i)
		}
	}
	ctx, span := c.startProducerSpan(ctx, specs)
	defer span.End()

	res, err := callUnary(ctx, c, onJobs(jobwirev1connect.JobServiceClient.Enqueue), &jobwirev1.EnqueueRequest{Jobs: specs})
	if err == nil && len(res.GetResults()) != len(specs) {
		err = withStatus(connect.NewError(connect.CodeInternal, fmt.Errorf("jobwire: broker answered %d results for %d jobs", len(res.GetResults()), len(specs))))
	}
	if err != nil {
		endSpanWithError(span, err)
		return nil, err
	}
	out := make([]EnqueueResult, len(specs))
	for i, r := range res.GetResults() {
		out[i] = EnqueueResult{JobID: r.GetJobId(), Duplicate: r.GetDuplicate()}
	}
	recordEnqueued(span, out)
	return out, nil
}

// GetJob returns the job with the given id. An unknown id answers NOT_FOUND
// (see connect.CodeOf).
func (c *Client) GetJob(ctx context.Context, id string) (*jobwirev1.Job, error) {
	res, err := callUnary(ctx, c, onJobs(jobwirev1connect.JobServiceClient.GetJob), &jobwirev1.GetJobRequest{Id: id})
	if err != nil {
		return nil, err
	}
	return res.GetJob(), nil
}

// CancelJob cancels a waiting job at once, or asks the worker running it to
// stop (the job then has cancel_requested set and is still RUNNING). It
// returns the job after the call. A completed or dead job answers
// FAILED_PRECONDITION.
func (c *Client) CancelJob(ctx context.Context, id string) (*jobwirev1.Job, error) {
	res, err := callUnary(ctx, c, onJobs(jobwirev1connect.JobServiceClient.CancelJob), &jobwirev1.CancelJobRequest{Id: id})
	if err != nil {
		return nil, err
	}
	return res.GetJob(), nil
}

// Replay makes DEAD (and, when asked, CANCELLED) jobs AVAILABLE again with a
// fresh attempt budget.
func (c *Client) Replay(ctx context.Context, req *jobwirev1.ReplayRequest) (*jobwirev1.ReplayResponse, error) {
	return callUnary(ctx, c, onAdmin(jobwirev1connect.AdminServiceClient.Replay), req)
}

// ReplayJobs replays the given DEAD jobs by id.
func (c *Client) ReplayJobs(ctx context.Context, ids ...string) (*jobwirev1.ReplayResponse, error) {
	return c.Replay(ctx, &jobwirev1.ReplayRequest{JobIds: ids})
}

// ListJobs lists jobs, newest first.
func (c *Client) ListJobs(ctx context.Context, req *jobwirev1.ListJobsRequest) (*jobwirev1.ListJobsResponse, error) {
	return callUnary(ctx, c, onAdmin(jobwirev1connect.AdminServiceClient.ListJobs), req)
}

// withCallTimeout applies CallTimeout unless ctx already has a deadline.
func (c *Client) withCallTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.cfg.CallTimeout)
}
