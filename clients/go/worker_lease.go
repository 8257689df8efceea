package jobwire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
	"github.com/jobwire/jobwire/clients/go/internal/backoff"
	"google.golang.org/protobuf/types/known/durationpb"
)

// healthyStreamAge: a Lease stream that lived this long counts as having
// worked, so the reconnect backoff starts over after it breaks.
const healthyStreamAge = 5 * time.Second

// leaseSession is one open Lease stream.
type leaseSession struct {
	stream *connect.BidiStreamForClient[jobwirev1.LeaseRequest, jobwirev1.LeaseResponse]
	// pendingCredit is credit granted but not yet sent (guarded by
	// workerRun.mu); creditSignal wakes the sender to send it.
	pendingCredit int
	creditSignal  chan struct{}
	// done is closed when the receive side has ended.
	done chan struct{}
}

// fatalStreamCode reports codes that no reconnect can cure: the broker
// rejected what this worker asks for.
func fatalStreamCode(code connect.Code) bool {
	switch code {
	case connect.CodeInvalidArgument, connect.CodeUnimplemented,
		connect.CodePermissionDenied, connect.CodeUnauthenticated:
		return true
	}
	return false
}

// leaseLoop keeps one Lease stream open until ctx is done, reopening it with
// jittered exponential backoff when it breaks. A stream that broke, or that
// the broker ended (it drains before it stops), makes the Client move to
// its next broker, so the new stream goes to a live replica instead of
// waiting for this one to come back. It returns nil once ctx is done and
// the last stream has drained, or the error that made the broker refuse
// the stream for good.
func (r *workerRun) leaseLoop(ctx context.Context) error {
	policy := backoff.Policy{Initial: r.cfg.ReconnectInitialBackoff, Max: r.cfg.ReconnectMaxBackoff}
	failures := 0
	for ctx.Err() == nil {
		ep := r.w.client.current()
		healthy, err := r.leaseOnce(ctx, ep)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && fatalStreamCode(connect.CodeOf(err)) {
			r.logger.Error("jobwire broker refused the Lease stream", "error", err, "broker", ep.url)
			return fmt.Errorf("jobwire: lease stream refused: %w", withStatus(err))
		}
		if healthy {
			failures = 0
		}
		delay := policy.Delay(failures)
		failures++
		if err == nil {
			err = errors.New("the broker ended the stream")
		}
		r.w.client.markFailed(ep, err)
		r.logger.Warn("jobwire Lease stream ended; reconnecting", "error", err, "broker", ep.url, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}
	return nil
}

// leaseOnce runs one Lease stream until it ends. When ctx is done it
// half-closes the stream and keeps receiving until the broker ends it.
// healthy reports whether the stream worked for a while.
func (r *workerRun) leaseOnce(ctx context.Context, ep *endpoint) (healthy bool, err error) {
	streamCtx, cancelStream := context.WithCancel(r.rpcCtx)
	defer cancelStream()
	started := time.Now()

	sess := &leaseSession{
		stream:       ep.workers.Lease(streamCtx),
		creditSignal: make(chan struct{}, 1),
		done:         make(chan struct{}),
	}
	open := &jobwirev1.LeaseOpen{
		Queues:      r.cfg.Queues,
		WorkerId:    r.cfg.WorkerID,
		MaxInFlight: int32(r.cfg.Concurrency),
	}
	if r.cfg.LeaseDuration > 0 {
		open.LeaseDuration = durationpb.New(r.cfg.LeaseDuration)
	}
	// The open message grants Concurrency credit. After a reconnect some
	// slots may still be busy with jobs from the old stream; the broker may
	// then send more jobs than there are free slots, and those wait in
	// r.waiting (heartbeated) while credit is withheld until the books
	// balance again. See grantLocked.
	r.mu.Lock()
	r.session = sess
	r.outstanding = r.cfg.Concurrency
	r.draining = false
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.session = nil
		r.outstanding = 0
		r.mu.Unlock()
	}()

	if err := sess.stream.Send(&jobwirev1.LeaseRequest{Msg: &jobwirev1.LeaseRequest_Open{Open: open}}); err != nil {
		// Send reports only that the stream is gone; Receive has the reason.
		if _, rerr := sess.stream.Receive(); rerr != nil {
			err = rerr
		}
		_ = sess.stream.CloseResponse()
		return false, asUnavailable(err)
	}

	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		r.sendLoop(ctx, sess, cancelStream)
	}()

	for {
		msg, rerr := sess.stream.Receive()
		if rerr != nil {
			close(sess.done)
			<-senderDone
			_ = sess.stream.CloseResponse()
			healthy = healthy || time.Since(started) >= healthyStreamAge
			if errors.Is(rerr, io.EOF) {
				return healthy, nil
			}
			return healthy, asUnavailable(rerr)
		}
		healthy = true
		if len(msg.GetJobs()) > 0 {
			r.dispatch(msg.GetJobs())
		}
	}
}

// sendLoop sends credit as slots free up, and half-closes the stream when
// the worker stops. It is the only goroutine that sends on the stream after
// the open message.
func (r *workerRun) sendLoop(ctx context.Context, sess *leaseSession, cancelStream context.CancelFunc) {
	for {
		select {
		case <-sess.creditSignal:
			r.mu.Lock()
			n := sess.pendingCredit
			sess.pendingCredit = 0
			r.mu.Unlock()
			if n == 0 {
				continue
			}
			req := &jobwirev1.LeaseRequest{Msg: &jobwirev1.LeaseRequest_Credit{Credit: &jobwirev1.LeaseCredit{Count: int32(n)}}}
			if err := sess.stream.Send(req); err != nil {
				return // the receive side sees why
			}
		case <-ctx.Done():
			// Stop taking jobs: no more credit, and a half-close tells the
			// broker to stop sending and end the stream. Jobs already on the
			// wire still arrive and run.
			r.mu.Lock()
			r.draining = true
			r.mu.Unlock()
			if err := sess.stream.CloseRequest(); err != nil {
				cancelStream()
				return
			}
			t := time.NewTimer(r.cfg.DrainTimeout)
			defer t.Stop()
			select {
			case <-sess.done:
			case <-t.C:
				r.logger.Warn("jobwire broker did not end the Lease stream after the half-close; closing it", "waited", r.cfg.DrainTimeout)
				cancelStream()
			}
			return
		case <-sess.done:
			return
		}
	}
}

// dispatch takes jobs the broker sent: each starts at once if a slot is
// free, or waits for one.
func (r *workerRun) dispatch(leased []*jobwirev1.LeasedJob) {
	var start []*activeJob
	r.mu.Lock()
	for _, lj := range leased {
		r.outstanding = max(r.outstanding-1, 0)
		token := lj.GetLeaseToken()
		if token == "" || lj.GetJob() == nil {
			r.logger.Error("jobwire broker sent a leased job without a token or job; ignoring it")
			continue
		}
		if _, dup := r.held[token]; dup {
			r.logger.Warn("jobwire broker sent a lease token this worker already holds; ignoring it", "job_id", lj.GetJob().GetId())
			continue
		}
		aj := r.newActiveJob(lj)
		r.held[token] = aj
		r.jobs.Add(1)
		if r.running < r.cfg.Concurrency {
			r.running++
			start = append(start, aj)
		} else {
			r.waiting = append(r.waiting, aj)
		}
	}
	// Credit held back while the broker had plenty goes now if it runs low.
	r.grantLocked()
	r.mu.Unlock()
	for _, aj := range start {
		go r.execute(aj)
	}
	r.wakeHeartbeater()
}

// releaseSlot frees the slot of a job whose outcome has been handed off: a
// waiting job takes it, or it becomes credit on the stream.
func (r *workerRun) releaseSlot() {
	var next *activeJob
	r.mu.Lock()
	r.running--
	if len(r.waiting) > 0 {
		next = r.waiting[0]
		r.waiting = r.waiting[1:]
		r.running++
	} else {
		r.grantLocked()
	}
	r.mu.Unlock()
	if next != nil {
		go r.execute(next)
	}
}

// grantLocked grants the stream whatever credit keeps
// running + waiting + outstanding credit at Concurrency; so the worker never
// asks for more jobs than it has slots. Callers hold r.mu.
//
// Credit is held back while the broker still holds at least half of
// Concurrency: it can already fill every slot it knows is free, and a
// credit message per finished job costs both ends CPU at low rates. At
// full load the broker's credit stays low, so freed slots go back at once.
// dispatch grants again as jobs arrive and the broker's credit falls.
//
// Credit is also held back while the worker holds 2 x Concurrency jobs or
// more: running or waiting, or finished with an ack the broker has not
// answered yet (acks fell behind: a slow or unreachable broker). Free slots
// alone would let a worker whose handlers outran its acks keep taking jobs,
// every one keeping its lease and its heartbeats; without this bound the
// TypeScript worker held ~90,000 jobs in the benchmark. settle grants the
// withheld credit as the owed acks are answered.
func (r *workerRun) grantLocked() {
	if r.session == nil || r.draining || r.outstanding*2 >= r.cfg.Concurrency {
		return
	}
	if len(r.held) >= 2*r.cfg.Concurrency {
		return
	}
	free := r.cfg.Concurrency - r.running - len(r.waiting) - r.outstanding
	if free <= 0 {
		return
	}
	r.outstanding += free
	r.session.pendingCredit += free
	select {
	case r.session.creditSignal <- struct{}{}:
	default:
	}
}
