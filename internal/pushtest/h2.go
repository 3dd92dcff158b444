package pushtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Start serves h over TLS with HTTP/2 until the test ends, so that every
// test exercises the transport the real services require (APNs refuses
// HTTP/1.1). A request that arrives over another protocol fails the test
// and gets 505. The returned client trusts only the server's certificate
// and is configured like the providers' default one (ForceAttemptHTTP2, no
// other TLS settings).
func Start(tb testing.TB, h http.Handler) (*httptest.Server, *http.Client) {
	tb.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			tb.Errorf("%s %s over %s, want HTTP/2", r.Method, r.URL.Path, r.Proto)
			http.Error(w, "HTTP/2 required", http.StatusHTTPVersionNotSupported)
			return
		}
		h.ServeHTTP(w, r)
	}))
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(tb.Output(), "pushtest: ", 0)
	srv.StartTLS()
	tb.Cleanup(srv.Close)

	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	tr := &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: pool}}
	tb.Cleanup(tr.CloseIdleConnections)
	return srv, &http.Client{Transport: tr}
}

// UntrustedCertFile writes a self-signed certificate for 127.0.0.1 that no
// server of this package uses, for SSL_CERT_FILE in tests that expect
// verification to fail.
func UntrustedCertFile(tb testing.TB) string {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "untrusted"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	return writePEM(tb, der)
}

// CertFile writes srv's certificate as PEM to a file in a temporary
// directory and returns its path, for SSL_CERT_FILE.
func CertFile(tb testing.TB, srv *httptest.Server) string {
	tb.Helper()
	return writePEM(tb, srv.Certificate().Raw)
}

func writePEM(tb testing.TB, der []byte) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}
