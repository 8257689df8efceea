package jobwire

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// Limits of the default HTTP/2 transport. The broker serves gRPC over
// cleartext HTTP/2 (h2c) on one port, so one TCP connection carries every
// call and stream; the pings notice a dead connection long before the OS's
// TCP keepalive would (minutes), so a worker reconnects promptly.
const (
	// dialTimeout bounds one dial, shared among a host name's addresses.
	dialTimeout = 5 * time.Second
	// A ping is sent after this long without any frame from the broker.
	h2PingAfterIdle = 15 * time.Second
	// The connection is closed when a ping is not answered within this.
	h2PingTimeout   = 10 * time.Second
	idleConnTimeout = 90 * time.Second
	// failedAddrMemory is how long an address that could not be dialled is
	// tried after the others. A broker restart takes a few seconds; a dead
	// machine can take minutes to leave DNS.
	failedAddrMemory = 30 * time.Second
)

// NewH2CClient returns an *http.Client that speaks HTTP/2 without TLS
// ("prior knowledge" h2c) to http:// URLs, and HTTP/2 over TLS to https://
// URLs. It never falls back to HTTP/1.1, which gRPC cannot use. It has no
// overall timeout, because Lease streams live for as long as the worker runs;
// per-call deadlines come from contexts.
//
// A broker host name with several DNS records (one per broker replica) is
// dialled address by address until one answers, and addresses that failed
// recently are tried last; see ClientConfig.Resolver.
func NewH2CClient() *http.Client { return newH2CClient(nil, nil) }

func newH2CClient(resolver *net.Resolver, tlsConfig *tls.Config) *http.Client {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true)
	d := &brokerDialer{
		dialer:   net.Dialer{KeepAlive: 30 * time.Second},
		resolver: resolver,
		failed:   map[string]time.Time{},
	}
	return &http.Client{
		Transport: &http.Transport{
			Protocols:   &protocols,
			DialContext: d.DialContext,
			// A Clone, so the caller's config is not changed under it. The
			// transport adds "h2" to its NextProtos.
			TLSClientConfig:   tlsConfig.Clone(),
			ForceAttemptHTTP2: true,
			IdleConnTimeout:   idleConnTimeout,
			HTTP2: &http.HTTP2Config{
				SendPingTimeout: h2PingAfterIdle,
				PingTimeout:     h2PingTimeout,
			},
		},
	}
}

// brokerDialer dials every address a broker host name resolves to, in
// turn, until one connects: a name with one DNS record per broker replica
// then fails over when a connection is made. The dial timeout is shared
// among the addresses still to try, as net.Dialer does, so a blackholed
// address cannot take all of it. Unlike net.Dialer it remembers addresses
// that failed and tries them last for failedAddrMemory, so that every new
// connection does not spend part of its timeout on the same dead replica.
type brokerDialer struct {
	dialer   net.Dialer
	resolver *net.Resolver // nil: net.DefaultResolver

	mu     sync.Mutex
	failed map[string]time.Time // "ip:port" -> when a dial to it failed
}

func (d *brokerDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	var addrs []string
	if net.ParseIP(host) != nil {
		addrs = []string{address}
	} else {
		resolver := d.resolver
		if resolver == nil {
			resolver = net.DefaultResolver
		}
		ips, err := resolver.LookupHost(ctx, host)
		if err != nil {
			return nil, fmt.Errorf("jobwire: resolve broker host %q: %w", host, err)
		}
		for _, ip := range ips {
			addrs = append(addrs, net.JoinHostPort(ip, port))
		}
	}
	addrs = d.order(addrs)

	var errs []error
	for i, addr := range addrs {
		attemptCtx, cancelAttempt := ctx, context.CancelFunc(func() {})
		if deadline, ok := ctx.Deadline(); ok && i < len(addrs)-1 {
			share := time.Until(deadline) / time.Duration(len(addrs)-i)
			attemptCtx, cancelAttempt = context.WithTimeout(ctx, share)
		}
		conn, err := d.dialer.DialContext(attemptCtx, network, addr)
		cancelAttempt()
		if err == nil {
			d.record(addr, false)
			return conn, nil
		}
		errs = append(errs, err)
		d.record(addr, true)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// order puts the addresses that failed within failedAddrMemory last,
// keeping the resolver's order otherwise.
func (d *brokerDialer) order(addrs []string) []string {
	if len(addrs) < 2 {
		return addrs
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	for a, at := range d.failed {
		if now.Sub(at) >= failedAddrMemory {
			delete(d.failed, a) // so the map holds only recent failures
		}
	}
	var good, bad []string
	for _, a := range addrs {
		if _, ok := d.failed[a]; ok {
			bad = append(bad, a)
		} else {
			good = append(good, a)
		}
	}
	return append(good, bad...)
}

func (d *brokerDialer) record(addr string, failed bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if failed {
		d.failed[addr] = time.Now()
	} else {
		delete(d.failed, addr)
	}
}
