package main_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/evict-dev/evict/internal/evictd"
	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/pkg/client"
)

// apnsCounter is a local HTTP/2 TLS server answering like APNs; it records
// every apns-id each device token receives.
type apnsCounter struct {
	mu   sync.Mutex
	ids  map[string][]string // token -> apns-ids received
	all  int
	bad  int
	wait time.Duration
}

func (a *apnsCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if !ok || r.ProtoMajor != 2 || r.Header.Get("apns-id") == "" {
		a.mu.Lock()
		a.bad++
		a.mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	time.Sleep(a.wait) // APNs takes a while too: it spreads the run over time
	a.mu.Lock()
	a.ids[token] = append(a.ids[token], r.Header.Get("apns-id"))
	a.all++
	a.mu.Unlock()
	w.Header().Set("apns-id", r.Header.Get("apns-id"))
}

func (a *apnsCounter) snapshot() (all, devices, bad int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.all, len(a.ids), a.bad
}

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTwoReplicasOneKilled: two evict-push processes share a tenant-wide
// logout of 5,000 devices; one is killed with SIGKILL midway. Every device
// gets its push, no device gets two different pushes, and a push is sent
// twice only if the killed replica had it in flight (the same apns-id: the
// provider accepted it before the replica could record it).
func TestTwoReplicasOneKilled(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "evict-push")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	apns := &apnsCounter{ids: map[string][]string{}, wait: 2 * time.Millisecond}
	srv := httptest.NewUnstartedServer(apns)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	certFile := writeFile(t, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	keyFile := writeFile(t, "AuthKey.p8", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))

	ns := testenv.NATS(t)
	dbURL := testenv.Database(t)
	ctx, cancel := context.WithCancel(context.Background())
	d, err := evictd.Start(ctx, evictd.Config{DataDir: t.TempDir(), NATSURL: ns.ClientURL(), DatabaseURL: dbURL,
		HTTPAddr: "127.0.0.1:0", AdminToken: "push-token", SessionMaxAge: time.Hour, Replicas: 1, RelayBatch: 1000,
		HeartbeatInterval: 100 * time.Millisecond, Logger: testenv.Quiet})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	defer func() { cancel(); _ = d.Wait() }()

	start := func(instance string) *exec.Cmd {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "EVICT_NATS_URL="+ns.ClientURL(), "DATABASE_URL="+dbURL, "EVICT_HTTP_ADDR=127.0.0.1:0",
			"EVICT_INSTANCE="+instance, "EVICT_PUSH_WORKERS=8", "EVICT_PUSH_LEASE=2s",
			"EVICT_APNS_URL="+srv.URL, "EVICT_APNS_KEY_FILE="+keyFile, "EVICT_APNS_KEY_ID=ABC123DEFG",
			"EVICT_APNS_TEAM_ID=TEAM123456", "EVICT_APNS_TOPIC=com.example.field", "SSL_CERT_FILE="+certFile)
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		ready := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				if strings.Contains(sc.Text(), "notifier running") {
					close(ready)
				}
			}
		}()
		select {
		case <-ready:
		case <-time.After(60 * time.Second):
			t.Fatalf("%s did not start", instance)
		}
		return cmd
	}
	victim := start("push-a")
	start("push-b")

	api := client.New("http://"+d.HTTPAddr, "push-token", nil)
	if _, err := api.CreateTenant(ctx, "field"); err != nil {
		t.Fatal(err)
	}
	const devices = 5000
	pool := testenv.Pool(t, dbURL)
	if _, err := pool.Exec(ctx, `INSERT INTO sessions (tenant_id, session_id, user_id, client, issued_at, push_provider, push_token)
		SELECT 'field', 'm' || i, 'tech-' || i, 'mobile', now() - interval '1 minute', 'apns', 'token-' || i
		FROM generate_series(1, $1) AS i`, devices); err != nil {
		t.Fatal(err)
	}
	if _, err := api.LogoutTenant(ctx, "field", ""); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "a fifth of the pushes", func() bool { all, _, _ := apns.snapshot(); return all >= devices/5 })
	if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = victim.Wait()
	killedAt, _, _ := apns.snapshot()

	testenv.Eventually(t, "every device pushed and recorded", func() bool {
		var pushed int
		_ = pool.QueryRow(ctx, "SELECT count(*) FROM push_deliveries WHERE status = 'pushed'").Scan(&pushed)
		_, n, _ := apns.snapshot()
		return n == devices && pushed == devices
	})
	all, n, bad := apns.snapshot()
	if bad > 0 {
		t.Fatalf("%d requests APNs would refuse", bad)
	}
	apns.mu.Lock()
	defer apns.mu.Unlock()
	dups := 0
	for tok, ids := range apns.ids {
		for _, id := range ids[1:] {
			if id != ids[0] {
				t.Fatalf("device %s got two different pushes (%v)", tok, ids)
			}
			dups++
		}
	}
	t.Logf("killed push-a after %d pushes; %d pushes to %d devices, %d repeated after the kill", killedAt, all, n, dups)
	if dups > 8 { // at most the killed replica's workers had a push in flight
		t.Errorf("%d repeated pushes, more than the killed replica had in flight (8)", dups)
	}
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM push_deliveries").Scan(&rows); err != nil || rows != devices {
		t.Errorf("%d deliveries recorded, want %d (%v)", rows, devices, err)
	}

}
