package jobwire

import (
	"net"
	"net/http"
	"time"
)

// Limits of the default HTTP/2 transport. The broker serves gRPC over
// cleartext HTTP/2 (h2c) on one port, so one TCP connection carries every
// call and stream; the pings notice a dead connection long before the OS's
// TCP keepalive would (minutes), so a worker reconnects promptly.
const (
	dialTimeout = 5 * time.Second
	// A ping is sent after this long without any frame from the broker.
	h2PingAfterIdle = 15 * time.Second
	// The connection is closed when a ping is not answered within this.
	h2PingTimeout   = 10 * time.Second
	idleConnTimeout = 90 * time.Second
)

// NewH2CClient returns an *http.Client that speaks HTTP/2 without TLS
// ("prior knowledge" h2c) to http:// URLs, and HTTP/2 over TLS to https://
// URLs. It never falls back to HTTP/1.1, which gRPC cannot use. It has no
// overall timeout, because Lease streams live for as long as the worker runs;
// per-call deadlines come from contexts.
func NewH2CClient() *http.Client {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true)
	return &http.Client{
		Transport: &http.Transport{
			Protocols:       &protocols,
			DialContext:     (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
			IdleConnTimeout: idleConnTimeout,
			HTTP2: &http.HTTP2Config{
				SendPingTimeout: h2PingAfterIdle,
				PingTimeout:     h2PingTimeout,
			},
		},
	}
}
