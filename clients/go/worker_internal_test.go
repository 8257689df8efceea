package jobwire

import (
	"context"
	"testing"
	"time"

	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func newTestRun(t *testing.T, cfg WorkerConfig) *workerRun {
	t.Helper()
	client, err := NewClient("http://127.0.0.1:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Queues) == 0 {
		cfg.Queues = []string{"q"}
	}
	w, err := NewWorker(client, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := newWorkerRun(w, context.Background())
	t.Cleanup(r.close)
	return r
}

func TestWorkerConfigValidation(t *testing.T) {
	client, _ := NewClient("http://127.0.0.1:1", nil)
	bad := []WorkerConfig{
		{},
		{Queues: []string{""}},
		{Queues: []string{"q"}, Concurrency: -1},
		{Queues: []string{"q"}, Concurrency: 1001},
		{Queues: []string{"q"}, LeaseDuration: -time.Second},
	}
	for _, cfg := range bad {
		if _, err := NewWorker(client, &cfg); err == nil {
			t.Errorf("NewWorker(%+v) accepted a bad config", cfg)
		}
	}
	if _, err := NewWorker(client, nil); err == nil {
		t.Error("NewWorker(nil config) succeeded")
	}
	w, err := NewWorker(client, &WorkerConfig{Queues: []string{"q"}})
	if err != nil {
		t.Fatal(err)
	}
	if w.cfg.Concurrency != DefaultConcurrency || w.cfg.AckFlushInterval != DefaultAckFlushInterval || w.ID() == "" {
		t.Errorf("defaults not applied: %+v", w.cfg)
	}
}

func TestLeaseLengthPrecedence(t *testing.T) {
	now := time.Now()
	expiry := timestamppb.New(now.Add(12 * time.Second))
	job := func(d time.Duration) *jobwirev1.LeasedJob {
		j := &jobwirev1.Job{}
		if d > 0 {
			j.LeaseDuration = durationpb.New(d)
		}
		return &jobwirev1.LeasedJob{Job: j, LeaseExpiresAt: expiry}
	}
	plain := newTestRun(t, WorkerConfig{})
	withLease := newTestRun(t, WorkerConfig{LeaseDuration: 20 * time.Second})
	if got := withLease.leaseLength(job(3*time.Second), now); got != 3*time.Second {
		t.Errorf("job's own lease: got %v, want 3s", got)
	}
	if got := withLease.leaseLength(job(0), now); got != 20*time.Second {
		t.Errorf("worker's lease: got %v, want 20s", got)
	}
	if got := plain.leaseLength(job(0), now); got != 12*time.Second {
		t.Errorf("lease from expiry: got %v, want 12s", got)
	}
	if got := plain.leaseLength(&jobwirev1.LeasedJob{Job: &jobwirev1.Job{}}, now); got != assumedLease {
		t.Errorf("nothing known: got %v, want %v", got, assumedLease)
	}
	aj := &activeJob{leaseLen: 900 * time.Millisecond}
	if got := plain.heartbeatInterval(aj); got != 300*time.Millisecond {
		t.Errorf("heartbeat interval = %v, want a third of the lease", got)
	}
	if got := plain.heartbeatInterval(&activeJob{leaseLen: time.Millisecond}); got != minHeartbeatInterval {
		t.Errorf("heartbeat interval for a tiny lease = %v, want %v", got, minHeartbeatInterval)
	}
}

// The credit books: running + waiting + outstanding credit never exceed
// Concurrency, and every freed slot is given back as credit exactly once.
func TestCreditAccounting(t *testing.T) {
	r := newTestRun(t, WorkerConfig{Concurrency: 3})
	sess := &leaseSession{creditSignal: make(chan struct{}, 1), done: make(chan struct{})}
	r.session, r.outstanding = sess, 3 // the open message granted 3

	leased := func(token string) *jobwirev1.LeasedJob {
		return &jobwirev1.LeasedJob{LeaseToken: token, Job: &jobwirev1.Job{Id: token, Type: "t"}}
	}
	// The books are driven by hand, as dispatch and releaseSlot drive them,
	// without starting handler goroutines.
	r.mu.Lock()
	for _, tok := range []string{"a", "b", "c"} {
		r.outstanding--
		aj := r.newActiveJob(leased(tok))
		r.held[tok] = aj
		r.running++
	}
	if r.outstanding != 0 {
		t.Fatalf("outstanding = %d after 3 jobs on 3 credit", r.outstanding)
	}
	// One slot frees: exactly one credit.
	r.running--
	r.grantLocked()
	if r.outstanding != 1 || sess.pendingCredit != 1 {
		t.Fatalf("after one free slot: outstanding %d, pending %d; want 1, 1", r.outstanding, sess.pendingCredit)
	}
	// Granting again with nothing freed grants nothing.
	r.grantLocked()
	if r.outstanding != 1 || sess.pendingCredit != 1 {
		t.Fatalf("a second grant with no free slot changed the books: outstanding %d, pending %d", r.outstanding, sess.pendingCredit)
	}
	r.mu.Unlock()

	// After a reconnect the open grants full credit while two jobs still
	// run: over-delivered jobs wait, and no credit is sent until the books
	// balance.
	r.mu.Lock()
	r.outstanding, sess.pendingCredit = 3, 0
	r.running = 2
	r.waiting = append(r.waiting, r.newActiveJob(leased("d")), r.newActiveJob(leased("e")))
	r.outstanding -= 2
	r.running-- // a job finishes; a waiting one takes its slot
	r.waiting = r.waiting[1:]
	r.running++
	r.grantLocked()
	if sess.pendingCredit != 0 {
		t.Errorf("credit %d granted while the worker is over-committed", sess.pendingCredit)
	}
	// Draining: never any credit.
	r.running, r.waiting, r.outstanding = 0, nil, 0
	r.draining = true
	r.grantLocked()
	if sess.pendingCredit != 0 {
		t.Errorf("credit %d granted while draining", sess.pendingCredit)
	}
	r.mu.Unlock()
}

// Credit is held back while the broker holds at least half of Concurrency,
// and goes back in one message once jobs arriving bring it below half.
func TestCreditReturnedInBatches(t *testing.T) {
	r := newTestRun(t, WorkerConfig{Concurrency: 10})
	sess := &leaseSession{creditSignal: make(chan struct{}, 1), done: make(chan struct{})}
	r.session, r.outstanding = sess, 10

	var grants []int
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := 0; i < 20; i++ {
		// One job at a time, as dispatch and releaseSlot drive the books.
		before := sess.pendingCredit
		r.outstanding--
		r.running++
		r.grantLocked()
		r.running--
		r.grantLocked()
		if n := sess.pendingCredit; n != before {
			grants = append(grants, n-before)
		}
		if r.running+len(r.waiting)+r.outstanding > r.cfg.Concurrency {
			t.Fatalf("job %d: running %d + waiting %d + outstanding %d exceed the concurrency", i, r.running, len(r.waiting), r.outstanding)
		}
	}
	// Twenty jobs, one at a time: a few grants of several credits each, not twenty of one.
	if len(grants) < 3 || len(grants) > 4 {
		t.Fatalf("grants %v: want 3 or 4", grants)
	}
	for _, g := range grants {
		if g < 5 {
			t.Fatalf("grants %v: each should return at least half the concurrency", grants)
		}
	}
	if r.outstanding*2 < r.cfg.Concurrency {
		t.Fatalf("the broker was left with %d credit", r.outstanding)
	}
}
