package jobwire_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	jobwire "github.com/jobwire/jobwire/clients/go"
	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
	"github.com/jobwire/jobwire/clients/go/internal/testbroker"
)

// Scoped tokens from a tokens file (JOBWIRE_AUTH_FILE), against a real
// broker: who may call what, on which queues, and how a refusal looks to a
// Go caller (see /work/notes/security-contract.md).

// The secrets of the tokens file below (16 characters at least).
const (
	ciSecret      = "ci-secret-0123456789abcdef"
	billingSecret = "billing-secret-0123456789abcdef"
	opsSecret     = "ops-secret-0123456789abcdef"
)

// scopedTokensYAML has a producer without admin or work ("ci"), a team
// limited to its queues ("billing-team", given by its SHA-256 only, as a
// file kept in a repository would), and an operator with every scope.
func scopedTokensYAML() string {
	sum := sha256.Sum256([]byte(billingSecret))
	return fmt.Sprintf(`tokens:
  - name: ci
    token: %q
    scopes: [enqueue, read]
  - name: billing-team
    sha256: %q
    scopes: [enqueue, work, read]
    queues: ["billing.*"]
  - name: ops
    token: %q
    scopes: [enqueue, work, read, admin]
`, ciSecret, hex.EncodeToString(sum[:]), opsSecret)
}

// writeTokensFile writes a tokens file for a broker and returns its path.
func writeTokensFile(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// countingTransport counts the requests per path (one per unary call or
// stream), to tell a refusal that was retried from one that was not.
type countingTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	n    map[string]int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.n[r.URL.Path]++
	c.mu.Unlock()
	return c.base.RoundTrip(r)
}

func (c *countingTransport) count(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[path]
}

// tokenClient is a Client presenting token (none when empty) whose requests
// are counted.
func tokenClient(t *testing.T, url, token string) (*jobwire.Client, *countingTransport) {
	t.Helper()
	counter := &countingTransport{base: jobwire.NewH2CClient().Transport, n: map[string]int{}}
	c, err := jobwire.NewClient(url, &jobwire.ClientConfig{
		Token:      token,
		HTTPClient: &http.Client{Transport: counter},
		Logger:     testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, counter
}

// wantRefusal checks that err is the refusal code's: its sentinel matches
// with errors.Is and no other's does, errors.As finds the *jobwire.Error,
// and the text is the code's lower-case name, ": ", and the broker's
// message, nothing added (as the TypeScript client shows it). It returns
// the broker's message.
func wantRefusal(t *testing.T, what string, err error, sentinel error, code jobwire.Code) string {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", what, code)
	}
	var e *jobwire.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: error %v (%T) is no *jobwire.Error", what, err, err)
	}
	if e.Code() != code || jobwire.CodeOf(err) != code || !errors.Is(err, sentinel) {
		t.Errorf("%s: error %v has code %v (errors.Is %v = %v), want %v", what, err, e.Code(), sentinel, errors.Is(err, sentinel), code)
	}
	for _, other := range []error{jobwire.ErrUnauthenticated, jobwire.ErrPermissionDenied, jobwire.ErrUnavailable, jobwire.ErrNotFound} {
		if other != sentinel && errors.Is(err, other) {
			t.Errorf("%s: error %v also matches %v", what, err, other)
		}
	}
	if want := code.String() + ": " + e.Message(); !strings.HasSuffix(err.Error(), want) {
		t.Errorf("%s: error text %q, want it to end with %q", what, err.Error(), want)
	}
	return e.Message()
}

func TestScopedTokens(t *testing.T) {
	if os.Getenv("JOBWIRE_TEST_URL") != "" {
		t.Skip("starts a broker of its own with JOBWIRE_AUTH_FILE; not with JOBWIRE_TEST_URL")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	b := startBroker(t, ctx, testbroker.Options{Env: []string{"JOBWIRE_AUTH_FILE=" + writeTokensFile(t, scopedTokensYAML())}})
	ops, _ := tokenClient(t, b.URL, opsSecret)

	t.Run("unauthenticated", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct{ name, token string }{{"no token", ""}, {"unknown token", "not-a-token-0123456789abcdef"}} {
			c, counter := tokenClient(t, b.URL, tc.token)
			_, err := c.EnqueueJSON(ctx, uniqueQueue("auth"), "t", struct{}{})
			wantRefusal(t, tc.name+": Enqueue", err, jobwire.ErrUnauthenticated, jobwire.CodeUnauthenticated)
			if n := counter.count("/jobwire.v1.JobService/Enqueue"); n != 1 {
				t.Errorf("%s: Enqueue was sent %d times, want once (UNAUTHENTICATED is not retried)", tc.name, n)
			}
			// WhoAmI is open to any authenticated caller, and to no one else.
			_, err = c.WhoAmI(ctx)
			wantRefusal(t, tc.name+": WhoAmI", err, jobwire.ErrUnauthenticated, jobwire.CodeUnauthenticated)
		}
	})

	t.Run("permission_denied_names_the_scope", func(t *testing.T) {
		t.Parallel()
		ci, counter := tokenClient(t, b.URL, ciSecret)
		queue := uniqueQueue("scope")
		// What ci's scopes allow: enqueue, and read the job back.
		res, err := ci.EnqueueJSON(ctx, queue, "t", struct{}{})
		if err != nil {
			t.Fatalf("ci (enqueue, read) Enqueue: %v", err)
		}
		if _, err := ci.GetJob(ctx, res.JobID); err != nil {
			t.Fatalf("ci (enqueue, read) GetJob: %v", err)
		}
		// What they do not. The broker's message names the token, the scope
		// and the method; the client puts the code in front and nothing else.
		for _, tc := range []struct {
			method string
			call   func() error
		}{
			{"Replay", func() error { _, err := ci.ReplayJobs(ctx, res.JobID); return err }},
			{"PauseQueue", func() error { _, err := ci.PauseQueue(ctx, queue); return err }},
			{"CancelJob", func() error { _, err := ci.CancelJob(ctx, res.JobID); return err }},
		} {
			err := tc.call()
			msg := wantRefusal(t, tc.method, err, jobwire.ErrPermissionDenied, jobwire.CodePermissionDenied)
			// The contract's wording is "token ci lacks scope admin (needed
			// by AdminService.Replay)"; the broker writes the method with a
			// slash. Either names all three things.
			want := regexp.MustCompile(`^(token )?ci lacks scope admin \(needed by (Admin|Job)Service[./]` + tc.method + `\)$`)
			if !want.MatchString(msg) || !strings.HasPrefix(err.Error(), "permission_denied: ") {
				t.Errorf("%s: error %q, want permission_denied: naming ci, scope admin and %s", tc.method, err, tc.method)
			}
		}
		if n := counter.count("/jobwire.v1.AdminService/PauseQueue"); n != 1 {
			t.Errorf("PauseQueue was sent %d times, want once (PERMISSION_DENIED is not retried)", n)
		}
		// The refusals changed nothing.
		if job, err := ops.GetJob(ctx, res.JobID); err != nil || job.GetState() != jobwirev1.JobState_JOB_STATE_AVAILABLE {
			t.Errorf("after the refused CancelJob the job is %v (%v), want AVAILABLE", job.GetState(), err)
		}
		if cfg, err := ops.GetQueueConfig(ctx, queue); err != nil || cfg.Paused {
			t.Errorf("after the refused PauseQueue the queue config is %+v (%v), want not paused", cfg, err)
		}
		// The operator's token may.
		if _, err := ops.PauseQueue(ctx, queue); err != nil {
			t.Errorf("ops (admin) PauseQueue: %v", err)
		}
	})

	t.Run("permission_denied_names_the_queue", func(t *testing.T) {
		t.Parallel()
		billing, _ := tokenClient(t, b.URL, billingSecret)
		theirs, others := "billing."+uniqueQueue("invoices"), uniqueQueue("emails")
		if _, err := billing.EnqueueJSON(ctx, theirs, "t", struct{}{}); err != nil {
			t.Fatalf("billing-team Enqueue to %s: %v", theirs, err)
		}
		_, err := billing.EnqueueJSON(ctx, others, "t", struct{}{})
		msg := wantRefusal(t, "Enqueue to "+others, err, jobwire.ErrPermissionDenied, jobwire.CodePermissionDenied)
		if want := "billing-team may not touch queue " + others + " (its queues: billing.*)"; !strings.Contains(msg, want) {
			t.Errorf("Enqueue to %s: message %q, want it to contain %q", others, msg, want)
		}
		// All or nothing: one spec outside the token's queues refuses the batch.
		specs := make([]*jobwirev1.JobSpec, 2)
		for i, q := range []string{theirs, others} {
			if specs[i], err = jobwire.NewJSONJob(q, "t", struct{}{}); err != nil {
				t.Fatal(err)
			}
		}
		_, err = billing.EnqueueMany(ctx, specs)
		wantRefusal(t, "EnqueueMany across queues", err, jobwire.ErrPermissionDenied, jobwire.CodePermissionDenied)
		if stats, err := ops.GetQueueStats(ctx, theirs); err != nil || len(stats) != 1 || stats[0].Available != 1 {
			t.Errorf("after the refused batch %s has %+v (%v), want the one job enqueued before", theirs, stats, err)
		}
	})

	t.Run("who_am_i", func(t *testing.T) {
		t.Parallel()
		for _, want := range []jobwire.Identity{
			{AuthEnabled: true, Name: "ci", Scopes: []string{"enqueue", "read"}, Queues: []string{"*"}},
			{AuthEnabled: true, Name: "billing-team", Scopes: []string{"enqueue", "work", "read"}, Queues: []string{"billing.*"}},
			{AuthEnabled: true, Name: "ops", Scopes: []string{"enqueue", "work", "read", "admin"}, Queues: []string{"*"}},
		} {
			secret := map[string]string{"ci": ciSecret, "billing-team": billingSecret, "ops": opsSecret}[want.Name]
			c, _ := tokenClient(t, b.URL, secret)
			got, err := c.WhoAmI(ctx)
			if err != nil {
				t.Fatalf("%s: WhoAmI: %v", want.Name, err)
			}
			if !sameIdentity(*got, want) {
				t.Errorf("WhoAmI = %+v, want %+v", *got, want)
			}
		}
	})

	// A worker whose token cannot lease from its queues is refused its
	// Lease stream: Run returns PERMISSION_DENIED after one try, instead of
	// reconnecting for ever, and no job is taken.
	t.Run("worker_refused_ends", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name, token, queue, want string
		}{
			{"token without work", ciSecret, uniqueQueue("nowork"), "ci lacks scope work"},
			{"queue outside the token's", billingSecret, uniqueQueue("notbilling"), "billing-team may not touch queue "},
		} {
			c, counter := tokenClient(t, b.URL, tc.token)
			res, err := ops.EnqueueJSON(ctx, tc.queue, "t", struct{}{})
			if err != nil {
				t.Fatal(err)
			}
			w, err := jobwire.NewWorker(c, &jobwire.WorkerConfig{
				Queues: []string{tc.queue},
				Logger: slog.New(slog.DiscardHandler), // the refusal is logged as an error
			})
			if err != nil {
				t.Fatal(err)
			}
			w.Handle("t", func(ctx context.Context, job *jobwire.Job) error {
				t.Errorf("%s: the refused worker ran job %s", tc.name, job.ID)
				return nil
			})
			runErr := make(chan error, 1)
			go func() { runErr <- w.Run(ctx) }()
			err = recv(t, runErr, tc.name+": the refused worker's Run to return")
			msg := wantRefusal(t, tc.name+": Run", err, jobwire.ErrPermissionDenied, jobwire.CodePermissionDenied)
			if !strings.Contains(msg, tc.want) {
				t.Errorf("%s: Run returned %q, want the refusal to contain %q", tc.name, err, tc.want)
			}
			if n := counter.count("/jobwire.v1.WorkerService/Lease"); n != 1 {
				t.Errorf("%s: the worker opened %d Lease streams, want 1", tc.name, n)
			}
			if job, err := ops.GetJob(ctx, res.JobID); err != nil || job.GetState() != jobwirev1.JobState_JOB_STATE_AVAILABLE {
				t.Errorf("%s: the job is %v (%v), want still AVAILABLE", tc.name, job.GetState(), err)
			}
		}
	})
}

// With auth off, WhoAmI says so, with every scope on every queue.
func TestClient_WhoAmIWithoutAuth(t *testing.T) {
	t.Parallel()
	env := setup(t, "whoami")
	got, err := env.client.WhoAmI(env.ctx)
	if err != nil {
		t.Fatalf("WhoAmI: %v", err)
	}
	want := jobwire.Identity{AuthEnabled: false, Scopes: []string{"enqueue", "work", "read", "admin"}, Queues: []string{"*"}}
	if !sameIdentity(*got, want) {
		t.Errorf("WhoAmI = %+v, want %+v", *got, want)
	}
}

func sameIdentity(a, b jobwire.Identity) bool {
	return a.AuthEnabled == b.AuthEnabled && a.Name == b.Name && slices.Equal(a.Scopes, b.Scopes) && slices.Equal(a.Queues, b.Queues)
}
