// Package backoff computes jittered exponential delays for retries and
// reconnects.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff with "equal jitter": the n-th delay
// (n counted from 0) is drawn uniformly from [d/2, d], where
// d = min(Max, Initial * 2^n). Keeping half the delay fixed stops a fleet
// that failed together from hammering the broker in lockstep, while still
// guaranteeing that each retry waits at least d/2.
type Policy struct {
	Initial time.Duration
	Max     time.Duration
}

// Delay returns the wait before retry number n (0 for the first retry).
func (p Policy) Delay(n int) time.Duration {
	d := p.ceiling(n)
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// ceiling is the un-jittered delay for retry n.
func (p Policy) ceiling(n int) time.Duration {
	if p.Initial <= 0 {
		return 0
	}
	maxDelay := p.Max
	if maxDelay < p.Initial {
		maxDelay = p.Initial
	}
	d := p.Initial
	for i := 0; i < n; i++ {
		if d >= maxDelay/2 {
			return maxDelay
		}
		d *= 2
	}
	return min(d, maxDelay)
}

// Sleep waits for Delay(n) or until done is closed, and reports whether the
// full delay elapsed.
func (p Policy) Sleep(done <-chan struct{}, n int) bool {
	t := time.NewTimer(p.Delay(n))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}
