package jobwire

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"
	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
)

// acker batches acks: a completed job waits at most AckFlushInterval, and
// every completion in that window shares one Ack call. Acks that cannot be
// delivered (the broker is restarting) are kept and retried with backoff;
// their leases go on being heartbeated meanwhile, so they can still succeed
// on a later stream.
type acker struct {
	r      *workerRun
	in     chan *activeJob
	stopCh chan struct{}
}

func newAcker(r *workerRun) *acker {
	return &acker{r: r, in: make(chan *activeJob, r.cfg.Concurrency), stopCh: make(chan struct{})}
}

// add queues a completed job's ack. After stop, acks are dropped: only
// abandoned handlers finish that late, and their leases are left to expire.
func (a *acker) add(aj *activeJob) {
	select {
	case a.in <- aj:
	case <-a.stopCh:
		a.r.logger.Warn("jobwire ack dropped: the worker has stopped", "job_id", aj.job.ID)
		endConsumerSpan(aj.span, outcomeReportFailed)
	}
}

func (a *acker) stop() { close(a.stopCh) }

func (a *acker) run() error {
	cfg := a.r.cfg
	var pending []*activeJob
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var flushC <-chan time.Time
	failures := 0
	for {
		select {
		case aj := <-a.in:
			pending = append(pending, aj)
			if flushC == nil {
				timer.Reset(cfg.AckFlushInterval)
				flushC = timer.C
			}
			if len(pending) >= cfg.AckBatchSize && failures == 0 {
				timer.Stop()
				flushC = nil
				pending = a.flush(pending, &failures)
				if len(pending) > 0 {
					timer.Reset(a.r.retry.Delay(failures - 1))
					flushC = timer.C
				}
			}
		case <-flushC:
			flushC = nil
			pending = a.flush(pending, &failures)
			if len(pending) > 0 {
				timer.Reset(a.r.retry.Delay(failures - 1))
				flushC = timer.C
			}
		case <-a.stopCh:
			for {
				select {
				case aj := <-a.in:
					pending = append(pending, aj)
					continue
				default:
				}
				break
			}
			return a.finalFlush(pending)
		}
	}
}

// finalFlush delivers the last acks, retrying for up to FinalFlushTimeout.
func (a *acker) finalFlush(pending []*activeJob) error {
	deadline := time.Now().Add(a.r.cfg.FinalFlushTimeout)
	failures := 0
	for len(pending) > 0 {
		pending = a.flush(pending, &failures)
		if len(pending) == 0 {
			break
		}
		delay := a.r.retry.Delay(failures - 1)
		if time.Now().Add(delay).After(deadline) {
			a.r.logger.Error("jobwire could not deliver acks before stopping; the jobs will run again", "jobs", len(pending))
			for _, aj := range pending {
				endConsumerSpan(aj.span, outcomeReportFailed)
			}
			return fmt.Errorf("jobwire: %d ack(s) could not be delivered before the worker stopped", len(pending))
		}
		time.Sleep(delay)
	}
	return nil
}

// flush sends pending acks in batches of at most AckBatchSize and returns
// those to retry.
func (a *acker) flush(pending []*activeJob, failures *int) []*activeJob {
	r := a.r
	for len(pending) > 0 {
		n := min(len(pending), r.cfg.AckBatchSize)
		batch := pending[:n]
		tokens := make([]string, n)
		for i, aj := range batch {
			tokens[i] = aj.token
		}
		ep := r.w.client.current()
		ctx, cancel := context.WithTimeout(r.rpcCtx, r.w.client.cfg.CallTimeout)
		res, err := ep.workers.Ack(ctx, connect.NewRequest(&jobwirev1.AckRequest{LeaseTokens: tokens}))
		cancel()
		err = asUnavailable(err)
		if err != nil && transientCode(connect.CodeOf(err)) {
			if connect.CodeOf(err) == connect.CodeUnavailable {
				r.w.client.markFailed(ep, err)
			}
			*failures++
			r.logger.Warn("jobwire ack failed; will retry", "error", err, "jobs", len(pending))
			return pending
		}
		*failures = 0
		var lostSet map[string]bool
		if err != nil {
			r.logger.Error("jobwire ack refused; the jobs will run again when their leases expire", "error", err, "jobs", n)
		} else if lost := res.Msg.GetLostLeaseTokens(); len(lost) > 0 {
			lostSet = make(map[string]bool, len(lost))
			for _, t := range lost {
				lostSet[t] = true
			}
		}
		for _, aj := range batch {
			r.settle(aj)
			switch {
			case err != nil:
				endConsumerSpan(aj.span, outcomeReportFailed)
			case lostSet[aj.token]:
				r.logger.Warn("jobwire ack came too late: the lease was lost and the job will run again", "job_id", aj.job.ID, "attempt", aj.job.Attempt)
				endConsumerSpan(aj.span, outcomeLeaseLost)
			default:
				endConsumerSpan(aj.span, outcomeCompleted)
			}
		}
		pending = pending[n:]
	}
	return nil
}
