package jobwire

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"

	"connectrpc.com/connect"
	"github.com/jobwire/jobwire/clients/go/gen/jobwire/v1/jobwirev1connect"
)

// Failover between broker replicas.
//
// Broker replicas share one database and hold no state of their own: a job
// leased through one can be heartbeated, acked or nacked through any other.
// So a Client given several brokers keeps one "current" broker for all its
// traffic and moves to the next one as soon as the current one fails to
// serve a call (UNAVAILABLE, a refused dial, a connection that broke
// mid-call). It stays on the new broker until that one fails in turn; it
// never waits for a dead broker to come back while another is up.
//
// A broker named by a host name with several DNS records fails over one
// level lower, when a connection is dialled: see brokerDialer.

// endpoint is one broker base URL with the generated clients that reach it.
type endpoint struct {
	index   int
	url     string
	jobs    jobwirev1connect.JobServiceClient
	workers jobwirev1connect.WorkerServiceClient
	admin   jobwirev1connect.AdminServiceClient
}

// parseBrokers splits target, one base URL or several separated by commas,
// and checks each.
func parseBrokers(target string) ([]string, error) {
	var out []string
	for _, raw := range strings.Split(target, ",") {
		u := strings.TrimRight(strings.TrimSpace(raw), "/")
		if u == "" {
			continue
		}
		parsed, err := url.Parse(u)
		if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
			return nil, fmt.Errorf("jobwire: broker URL %q must look like http://host:port or https://host:port", u)
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("jobwire: no broker URL in %q", target)
	}
	return out, nil
}

func (c *Client) makeEndpoints(urls []string, httpClient connect.HTTPClient, opts []connect.ClientOption) {
	c.endpoints = make([]*endpoint, len(urls))
	for i, u := range urls {
		c.endpoints[i] = &endpoint{
			index:   i,
			url:     u,
			jobs:    jobwirev1connect.NewJobServiceClient(httpClient, u, opts...),
			workers: jobwirev1connect.NewWorkerServiceClient(httpClient, u, opts...),
			admin:   jobwirev1connect.NewAdminServiceClient(httpClient, u, opts...),
		}
	}
	if c.cfg.ShuffleBrokers && len(urls) > 1 {
		c.preferred.Store(uint32(rand.IntN(len(urls))))
	}
}

// current returns the broker that calls go to now.
func (c *Client) current() *endpoint {
	return c.endpoints[int(c.preferred.Load())%len(c.endpoints)]
}

// Brokers returns the broker base URLs the Client was given, in order.
func (c *Client) Brokers() []string {
	out := make([]string, len(c.endpoints))
	for i, ep := range c.endpoints {
		out[i] = ep.url
	}
	return out
}

// CurrentBroker returns the base URL that calls go to now: the first broker
// given (or a random one, with ShuffleBrokers) until it fails.
func (c *Client) CurrentBroker() string { return c.current().url }

// markFailed records that ep could not serve a call. If ep is still the
// current broker, the next one in the list becomes current, so the next
// call, retry or Lease stream goes there. Concurrent failures of one call
// each still move the Client by one broker only.
func (c *Client) markFailed(ep *endpoint, err error) {
	n := len(c.endpoints)
	if n == 1 {
		return
	}
	cur := uint32(ep.index)
	next := uint32((ep.index + 1) % n)
	if c.preferred.CompareAndSwap(cur, next) {
		c.logger.Warn("jobwire broker failed; moving to the next one", "from", ep.url, "to", c.endpoints[next].url, "error", err)
	}
}

// callUnary makes one unary call with the per-call deadline on the current
// broker. A call answered UNAVAILABLE (or whose connection broke) moves at
// once to the next broker that has not been tried in this round; once
// every broker has failed, it waits (jittered exponential backoff) and
// starts another round, RetryAttempts rounds in all. With one broker a
// round is one try.
//
// Only UNAVAILABLE is retried: it is what the broker (and connect, for a
// refused or dropped connection) answers when the request could not be
// served right now; every other code is the broker's considered answer.
func callUnary[Req, Res any](
	ctx context.Context,
	c *Client,
	method rpc[Req, Res],
	req *Req,
) (*Res, error) {
	tried := 0
	for round := 0; ; {
		ep := c.current()
		callCtx, cancel := c.withCallTimeout(ctx)
		res, err := method(ep, callCtx, connect.NewRequest(req))
		cancel()
		if err == nil {
			return res.Msg, nil
		}
		err = asUnavailable(err)
		if connect.CodeOf(err) != connect.CodeUnavailable || ctx.Err() != nil {
			return nil, withStatus(err)
		}
		c.markFailed(ep, err)
		if tried++; tried < len(c.endpoints) {
			continue
		}
		tried = 0
		if round++; round >= c.cfg.RetryAttempts {
			return nil, withStatus(err)
		}
		if !c.retry.Sleep(ctx.Done(), round-1) {
			return nil, withStatus(err)
		}
	}
}

// rpc is one unary method, called on a given broker.
type rpc[Req, Res any] func(*endpoint, context.Context, *connect.Request[Req]) (*connect.Response[Res], error)

// onJobs, onWorkers and onAdmin turn a method expression of a generated
// client interface (jobwirev1connect.JobServiceClient.GetJob) into an rpc.
func onJobs[Req, Res any](m func(jobwirev1connect.JobServiceClient, context.Context, *connect.Request[Req]) (*connect.Response[Res], error)) rpc[Req, Res] {
	return func(e *endpoint, ctx context.Context, r *connect.Request[Req]) (*connect.Response[Res], error) {
		return m(e.jobs, ctx, r)
	}
}

func onWorkers[Req, Res any](m func(jobwirev1connect.WorkerServiceClient, context.Context, *connect.Request[Req]) (*connect.Response[Res], error)) rpc[Req, Res] {
	return func(e *endpoint, ctx context.Context, r *connect.Request[Req]) (*connect.Response[Res], error) {
		return m(e.workers, ctx, r)
	}
}

func onAdmin[Req, Res any](m func(jobwirev1connect.AdminServiceClient, context.Context, *connect.Request[Req]) (*connect.Response[Res], error)) rpc[Req, Res] {
	return func(e *endpoint, ctx context.Context, r *connect.Request[Req]) (*connect.Response[Res], error) {
		return m(e.admin, ctx, r)
	}
}
