package jobwire_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	jobwire "github.com/jobwire/jobwire/clients/go"
	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
	"github.com/jobwire/jobwire/clients/go/gen/jobwire/v1/jobwirev1connect"
)

// These tests script the broker's answers with a fake JobService served over
// real h2c on loopback, to reach what a real broker does only by chance: a
// connection that dies in the middle of a call, and several brokers where
// exactly one is down.

type connKey struct{}

// fakeServer serves fake over h2c and returns its URL. Handlers can reach
// the TCP connection of their call through connOf.
func fakeServer(t *testing.T, fake *fakeJobService) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(jobwirev1connect.NewJobServiceHandler(fake))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, c)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

func connOf(ctx context.Context) net.Conn { return ctx.Value(connKey{}).(net.Conn) }

func newTestClient(t *testing.T, target string, cfg *jobwire.ClientConfig) *jobwire.Client {
	t.Helper()
	if cfg == nil {
		cfg = &jobwire.ClientConfig{}
	}
	cfg.Logger = testLogger()
	cfg.RetryInitialBackoff, cfg.RetryMaxBackoff = time.Millisecond, 5*time.Millisecond
	client, err := jobwire.NewClient(target, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	return client
}

var answerJ1 = &jobwirev1.GetJobResponse{Job: &jobwirev1.Job{Id: "j1"}}

// A broker that dies mid-call (the kernel resets its connections, as on
// SIGKILL, or closes them) never answered: the call is retried like an
// UNAVAILABLE one, not reported as CANCELED or INTERNAL.
func TestClient_RetriesWhenTheConnectionDiesMidCall(t *testing.T) {
	for _, tc := range []struct {
		name string
		drop func(c net.Conn)
	}{
		{"reset", func(c net.Conn) { _ = c.(*net.TCPConn).SetLinger(0); c.Close() }},
		{"closed", func(c net.Conn) { c.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeJobService{answer: func(ctx context.Context, call int32) (*jobwirev1.GetJobResponse, error) {
				if call == 1 {
					tc.drop(connOf(ctx))
					<-ctx.Done()
					return nil, ctx.Err()
				}
				return answerJ1, nil
			}}
			client := newTestClient(t, fakeServer(t, fake), nil)
			job, err := client.GetJob(context.Background(), "j1")
			if err != nil {
				t.Fatalf("GetJob: %v (code %v), want a retry that succeeds", err, jobwire.CodeOf(err))
			}
			if job.GetId() != "j1" || fake.calls.Load() != 2 {
				t.Errorf("got job %q after %d calls, want j1 after 2", job.GetId(), fake.calls.Load())
			}
		})
	}

	t.Run("gives_up_as_unavailable", func(t *testing.T) {
		fake := &fakeJobService{answer: func(ctx context.Context, call int32) (*jobwirev1.GetJobResponse, error) {
			c := connOf(ctx)
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
			<-ctx.Done()
			return nil, ctx.Err()
		}}
		client := newTestClient(t, fakeServer(t, fake), &jobwire.ClientConfig{RetryAttempts: 2})
		_, err := client.GetJob(context.Background(), "j1")
		if jobwire.CodeOf(err) != jobwire.CodeUnavailable || !strings.HasPrefix(err.Error(), "unavailable: ") {
			t.Errorf("error = %v, want UNAVAILABLE naming its code", err)
		}
	})
}

// A caller's own cancellation is not mistaken for a broken connection.
func TestClient_CallerCancellationIsNotRetried(t *testing.T) {
	started := make(chan struct{})
	fake := &fakeJobService{answer: func(ctx context.Context, call int32) (*jobwirev1.GetJobResponse, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	client := newTestClient(t, fakeServer(t, fake), nil)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	_, err := client.GetJob(ctx, "j1")
	if jobwire.CodeOf(err) != jobwire.CodeCanceled || fake.calls.Load() != 1 {
		t.Errorf("error %v after %d calls, want CANCELED after 1", err, fake.calls.Load())
	}
}

// With several brokers, a call answered UNAVAILABLE goes at once to the
// next broker, and the Client stays there.
func TestClient_FailsOverToTheNextBroker(t *testing.T) {
	down := &fakeJobService{answer: func(ctx context.Context, call int32) (*jobwirev1.GetJobResponse, error) {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("draining"))
	}}
	up := &fakeJobService{answer: func(ctx context.Context, call int32) (*jobwirev1.GetJobResponse, error) {
		return answerJ1, nil
	}}
	downURL, upURL := fakeServer(t, down), fakeServer(t, up)
	// A long backoff: moving to another broker must not wait for it.
	client, err := jobwire.NewClient(downURL+","+upURL, &jobwire.ClientConfig{Logger: testLogger(), RetryInitialBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for range 3 {
		if _, err := client.GetJob(context.Background(), "j1"); err != nil {
			t.Fatalf("GetJob: %v", err)
		}
	}
	if down.calls.Load() != 1 || up.calls.Load() != 3 {
		t.Errorf("calls: %d to the broker that is down, %d to the one that is up; want 1 and 3", down.calls.Load(), up.calls.Load())
	}
	if got := client.CurrentBroker(); got != upURL {
		t.Errorf("CurrentBroker = %s, want %s", got, upURL)
	}
}

// When every broker is down a call gets RetryAttempts rounds, each trying
// every broker once.
func TestClient_RetriesRoundsOverEveryBroker(t *testing.T) {
	unavailable := func(ctx context.Context, call int32) (*jobwirev1.GetJobResponse, error) {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("down"))
	}
	a, b := &fakeJobService{answer: unavailable}, &fakeJobService{answer: unavailable}
	client := newTestClient(t, fakeServer(t, a)+","+fakeServer(t, b), &jobwire.ClientConfig{RetryAttempts: 3})
	_, err := client.GetJob(context.Background(), "j1")
	if jobwire.CodeOf(err) != jobwire.CodeUnavailable || a.calls.Load() != 3 || b.calls.Load() != 3 {
		t.Errorf("error %v after %d and %d calls, want UNAVAILABLE after 3 each", err, a.calls.Load(), b.calls.Load())
	}
}

func TestNewClient_ParsesBrokerLists(t *testing.T) {
	c, err := jobwire.NewClient(" http://10.0.0.1:50051/, https://broker-b:50051 ,", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"http://10.0.0.1:50051", "https://broker-b:50051"}
	if got := c.Brokers(); !slices.Equal(got, want) {
		t.Errorf("Brokers() = %v, want %v", got, want)
	}
	for _, bad := range []string{"", " , ", "http://a:1,127.0.0.1:2", "ftp://a:1", "http://"} {
		if _, err := jobwire.NewClient(bad, nil); err == nil {
			t.Errorf("NewClient(%q) accepted it", bad)
		}
	}
}
