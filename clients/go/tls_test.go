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
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
	jobwirev1 "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
	"github.com/jobwire/jobwire/clients/go/gen/jobwire/v1/jobwirev1connect"
	"github.com/jobwire/jobwire/clients/go/internal/testbroker"
)

// testPKI is a throwaway CA with a server certificate for 127.0.0.1 and a
// client certificate, made at run time.
type testPKI struct {
	pool   *x509.CertPool
	caPEM  []byte
	server tls.Certificate
	client tls.Certificate
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

// Enqueue, Lease and Ack through a broker serving TLS, and mTLS. Skips while
// the broker ignores JOBWIRE_TLS_CERT (it then listens on http://).
func TestBroker_TLSAndMTLS(t *testing.T) {
	if os.Getenv("JOBWIRE_TEST_URL") != "" {
		t.Skip("starts brokers of its own; not with JOBWIRE_TEST_URL")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	pki := newTestPKI(t)
	tlsEnv := []string{"JOBWIRE_TLS_CERT=" + pki.serverCert, "JOBWIRE_TLS_KEY=" + pki.serverKey}

	run := func(t *testing.T, b *testbroker.Broker, cfg *tls.Config) {
		client := newTestClient(t, b.URL, &jobwire.ClientConfig{TLS: cfg})
		env := &testEnv{t: t, ctx: ctx, client: client, queue: uniqueQueue("tls")}
		seen := env.startGreeter(jobwire.WorkerConfig{})
		id := mustEnqueueJSON(env, "greet", greetArgs{Name: "tls"})
		recv(t, seen, "the worker to run the job over TLS")
		env.waitForState(id, stateCompleted)
	}

	b := startBroker(t, ctx, testbroker.Options{Env: tlsEnv})
	if !strings.HasPrefix(b.URL, "https://") {
		t.Skipf("the broker does not serve TLS yet (it listens on %s with JOBWIRE_TLS_CERT set)", b.URL)
	}
	t.Run("tls", func(t *testing.T) { run(t, b, &tls.Config{RootCAs: pki.pool}) })

	t.Run("mtls", func(t *testing.T) {
		b := startBroker(t, ctx, testbroker.Options{Env: append(tlsEnv, "JOBWIRE_TLS_CLIENT_CA="+pki.caFile())})
		run(t, b, &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.client}})
		noCert := newTestClient(t, b.URL, &jobwire.ClientConfig{TLS: &tls.Config{RootCAs: pki.pool}, RetryAttempts: 1})
		if _, err := noCert.EnqueueJSON(ctx, uniqueQueue("tls"), "greet", struct{}{}); err == nil {
			t.Error("a client without a certificate enqueued through a broker that requires one")
		}
	})
}
