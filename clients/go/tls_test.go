package jobwire_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
	"github.com/jobwire/jobwire/clients/go/gen/jobwire/v1/jobwirev1connect"
	"github.com/jobwire/jobwire/clients/go/internal/testbroker"
)

// testPKI is a throwaway CA with a server certificate for 127.0.0.1 and
// two client certificates, made at run time.
type testPKI struct {
	pool   *x509.CertPool
	caPEM  []byte
	server tls.Certificate
	// client has the subject CN=go-client-test, and stranger CN=stranger.
	client, stranger tls.Certificate
	// serverCert and serverKey are the server's PEM files, for a broker.
	serverCert, serverKey string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "jobwire test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p := &testPKI{pool: x509.NewCertPool(), caPEM: pemBlock("CERTIFICATE", caDER)}
	p.pool.AddCert(ca)

	issue := func(serial int64, name string, usage x509.ExtKeyUsage, ips []net.IP) (tls.Certificate, []byte, []byte) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		certPEM, keyPEM := pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", keyDER)
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return pair, certPEM, keyPEM
	}
	var certPEM, keyPEM []byte
	p.server, certPEM, keyPEM = issue(2, "127.0.0.1", x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP("127.0.0.1")})
	p.client, _, _ = issue(3, "go-client-test", x509.ExtKeyUsageClientAuth, nil)
	p.stranger, _, _ = issue(4, "stranger", x509.ExtKeyUsageClientAuth, nil)

	dir := t.TempDir()
	p.serverCert, p.serverKey = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	for path, data := range map[string][]byte{p.serverCert: certPEM, p.serverKey: keyPEM, filepath.Join(dir, "ca.pem"): p.caPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func (p *testPKI) caFile() string { return filepath.Join(filepath.Dir(p.serverCert), "ca.pem") }

func newKey(t *testing.T) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}

// ClientConfig.TLS trusts a private CA and presents a client certificate,
// over HTTP/2 negotiated by ALPN, against a TLS server that requires one.
func TestClient_TLSWithPrivateCAAndClientCertificate(t *testing.T) {
	pki := newTestPKI(t)
	mux := http.NewServeMux()
	mux.Handle(jobwirev1connect.NewJobServiceHandler(&fakeJobService{answer: func(ctx context.Context, call int32) (*jobwirev1.GetJobResponse, error) {
		return answerJ1, nil
	}}))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{pki.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pki.pool,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	mtls := &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.client}}
	client := newTestClient(t, srv.URL, &jobwire.ClientConfig{TLS: mtls})
	if job, err := client.GetJob(context.Background(), "j1"); err != nil || job.GetId() != "j1" {
		t.Fatalf("GetJob over mTLS = %v, %v", job, err)
	}

	noCert := newTestClient(t, srv.URL, &jobwire.ClientConfig{TLS: &tls.Config{RootCAs: pki.pool}, RetryAttempts: 1})
	if _, err := noCert.GetJob(context.Background(), "j1"); err == nil {
		t.Error("a client without a certificate got through a server that requires one")
	}
	untrusted := newTestClient(t, srv.URL, &jobwire.ClientConfig{RetryAttempts: 1})
	if _, err := untrusted.GetJob(context.Background(), "j1"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client that does not trust the CA: error %v, want a certificate error", err)
	}
}

// Brokers serving TLS (JOBWIRE_TLS_CERT), and mTLS (JOBWIRE_TLS_CLIENT_CA),
// with certificates made at run time: a worker enqueues, leases and acks
// through each; a client certificate named in the tokens file is an
// identity of its own; and a client that does not trust the broker's
// certificate fails at once with UNAVAILABLE.
func TestBroker_TLSAndMTLS(t *testing.T) {
	if os.Getenv("JOBWIRE_TEST_URL") != "" {
		t.Skip("starts brokers of its own; not with JOBWIRE_TEST_URL")
	}
	t.Parallel()
	// The subtests run in parallel, after this function has returned.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	pki := newTestPKI(t)
	tlsEnv := []string{"JOBWIRE_TLS_CERT=" + pki.serverCert, "JOBWIRE_TLS_KEY=" + pki.serverKey}
	mtlsEnv := append(slices.Clip(tlsEnv), "JOBWIRE_TLS_CLIENT_CA="+pki.caFile())
	startTLSBroker := func(t *testing.T, env []string) *testbroker.Broker {
		b := startBroker(t, ctx, testbroker.Options{Env: env})
		if !strings.HasPrefix(b.URL, "https://") {
			t.Fatalf("the broker listens on %s with JOBWIRE_TLS_CERT set, want an https:// URL", b.URL)
		}
		return b
	}
	client := func(t *testing.T, b *testbroker.Broker, cfg *jobwire.ClientConfig) *jobwire.Client {
		return newTestClient(t, b.URL, cfg)
	}
	// roundTrip enqueues a job and waits for a worker on c to complete it.
	roundTrip := func(t *testing.T, c *jobwire.Client) {
		env := &testEnv{t: t, ctx: ctx, client: c, queue: uniqueQueue("tls")}
		seen := env.startGreeter(jobwire.WorkerConfig{})
		id := mustEnqueueJSON(env, "greet", greetArgs{Name: "tls"})
		recv(t, seen, "the worker to run the job over TLS")
		env.waitForState(id, stateCompleted)
	}
	withCert := func(cert tls.Certificate) *tls.Config {
		return &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{cert}}
	}

	t.Run("tls", func(t *testing.T) {
		t.Parallel()
		b := startTLSBroker(t, tlsEnv)
		roundTrip(t, client(t, b, &jobwire.ClientConfig{TLS: &tls.Config{RootCAs: pki.pool}}))

		// The system roots do not include the test CA: the handshake
		// fails, every retry fails the same way, and the call ends with
		// UNAVAILABLE naming the certificate, well before its deadline.
		untrusted := client(t, b, &jobwire.ClientConfig{})
		callCtx, cancel := context.WithTimeout(ctx, waitTimeout)
		defer cancel()
		_, err := untrusted.EnqueueJSON(callCtx, uniqueQueue("tls"), "greet", struct{}{})
		if !errors.Is(err, jobwire.ErrUnavailable) || !strings.HasPrefix(err.Error(), "unavailable: ") || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("a client that does not trust the broker's CA: error %v, want UNAVAILABLE naming the certificate", err)
		}
		// A cleartext client does not get through either, and is not left
		// waiting.
		cleartext := newTestClient(t, "http://"+strings.TrimPrefix(b.URL, "https://"), &jobwire.ClientConfig{RetryAttempts: 1})
		if _, err := cleartext.EnqueueJSON(callCtx, uniqueQueue("tls"), "greet", struct{}{}); !errors.Is(err, jobwire.ErrUnavailable) {
			t.Errorf("a cleartext client of a TLS broker: error %v, want UNAVAILABLE", err)
		}
	})

	t.Run("mtls", func(t *testing.T) {
		t.Parallel()
		// Without a tokens file any certificate the CA signed is let in.
		b := startTLSBroker(t, mtlsEnv)
		roundTrip(t, client(t, b, &jobwire.ClientConfig{TLS: withCert(pki.client)}))
		noCert := client(t, b, &jobwire.ClientConfig{TLS: &tls.Config{RootCAs: pki.pool}, RetryAttempts: 1})
		callCtx, cancel := context.WithTimeout(ctx, waitTimeout)
		defer cancel()
		_, err := noCert.EnqueueJSON(callCtx, uniqueQueue("tls"), "greet", struct{}{})
		if !errors.Is(err, jobwire.ErrUnavailable) {
			t.Errorf("a client without a certificate: error %v, want UNAVAILABLE (the handshake failed)", err)
		}
	})

	t.Run("mtls_certificate_identity", func(t *testing.T) {
		t.Parallel()
		tokens := writeTokensFile(t, `tokens:
  - name: ops
    token: "`+opsSecret+`"
    scopes: [enqueue, work, read, admin]
certificates:
  - name: go-fleet
    subject: "CN=go-client-test"
    scopes: [enqueue, work, read]
`)
		b := startTLSBroker(t, append(slices.Clip(mtlsEnv), "JOBWIRE_AUTH_FILE="+tokens))
		fleet := client(t, b, &jobwire.ClientConfig{TLS: withCert(pki.client)})

		// The certificate alone authenticates the producer and the worker.
		roundTrip(t, fleet)
		got, err := fleet.WhoAmI(ctx)
		want := jobwire.Identity{AuthEnabled: true, Name: "go-fleet", Scopes: []string{"enqueue", "work", "read"}, Queues: []string{"*"}}
		if err != nil || !sameIdentity(*got, want) {
			t.Errorf("WhoAmI with the certificate = %+v, %v; want %+v", got, err, want)
		}
		// Its scopes hold as a token's do.
		_, err = fleet.PauseQueue(ctx, uniqueQueue("tls"))
		if msg := wantRefusal(t, "PauseQueue with the certificate", err, jobwire.ErrPermissionDenied, jobwire.CodePermissionDenied); !strings.HasPrefix(msg, "certificate go-fleet lacks scope admin") {
			t.Errorf("PauseQueue with the certificate: %q, want the refusal to name go-fleet and scope admin", msg)
		}
		// A token sent along wins over the certificate.
		withToken := client(t, b, &jobwire.ClientConfig{TLS: withCert(pki.client), Token: opsSecret})
		if got, err := withToken.WhoAmI(ctx); err != nil || got.Name != "ops" {
			t.Errorf("WhoAmI with the certificate and the ops token = %+v, %v; want ops", got, err)
		}
		// A certificate the CA signed but the file does not name gets the
		// TLS handshake and nothing more.
		stranger := client(t, b, &jobwire.ClientConfig{TLS: withCert(pki.stranger)})
		_, err = stranger.WhoAmI(ctx)
		wantRefusal(t, "WhoAmI with an unknown certificate", err, jobwire.ErrUnauthenticated, jobwire.CodeUnauthenticated)
	})
}
