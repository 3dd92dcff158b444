package evictd_test

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
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/evict-dev/evict/internal/evictd"
	"github.com/evict-dev/evict/internal/testenv"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and a pool that trusts it.
func selfSigned(t *testing.T) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "evictd test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return certFile, keyFile, roots
}

// TestTLS: with certificate files, the admin API serves HTTPS only and the
// embedded NATS requires TLS; a bad file stops evictd with an error that
// names the variable.
func TestTLS(t *testing.T) {
	certFile, keyFile, roots := selfSigned(t)
	dbURL := testenv.Database(t)
	d, _ := startDaemon(t, dbURL, "", func(c *evictd.Config) {
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
		c.NATSTLSCertFile, c.NATSTLSKeyFile = certFile, keyFile
	})
	if d.HTTPScheme != "https" {
		t.Fatalf("scheme %q", d.HTTPScheme)
	}
	tc := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
	resp, err := hc.Get("https://" + d.HTTPAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTPS /healthz: %d", resp.StatusCode)
	}
	if resp, err := http.Get("http://" + d.HTTPAddr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP answered 200")
		}
	}

	js := testenv.JetStream(t, d.NATSURL, nats.Secure(tc))
	if _, err := js.Stream(context.Background(), "EVICT_STATE"); err != nil {
		t.Errorf("guard over TLS cannot read the state stream: %v", err)
	}
	if plain, err := nats.Connect(d.NATSURL, nats.Timeout(2*time.Second)); err == nil {
		plain.Close()
		t.Error("NATS accepted a client without TLS")
	}

	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	_ = os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	for name, c := range map[string][2]string{
		"garbage cert":  {garbage, keyFile},
		"missing key":   {certFile, filepath.Join(t.TempDir(), "nope.pem")},
		"only the cert": {certFile, ""},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		_, err := evictd.Start(ctx, evictd.Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", DatabaseURL: dbURL,
			HTTPAddr: "127.0.0.1:0", AdminToken: token, SessionMaxAge: time.Hour, Replicas: 1, RelayBatch: 10,
			TLSCertFile: c[0], TLSKeyFile: c[1], Logger: testenv.Quiet})
		cancel()
		if err == nil || !strings.Contains(err.Error(), "EVICT_TLS_") {
			t.Errorf("%s: %v, want an error naming EVICT_TLS_*", name, err)
		}
	}
}
