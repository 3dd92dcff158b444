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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

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

// TestTwoReplicasOneStopped: two evict-push processes share a tenant-wide
// logout of 5,000 devices; one of them is stopped midway.
//
// SIGTERM: the replica drains (finishes and records its sends, releases
// what it claimed but did not send) and exits 0; every device gets exactly
// one request, and no delivery is attempted twice.
//
// SIGKILL: the replica cannot record what the provider accepted last, so a
// push it had in flight is sent again by the survivor, with the same
// apns-id: every device is pushed, never two different pushes, and at most
// one repeat per worker of the killed replica.
func TestTwoReplicasOneStopped(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "evict-push")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const workers = 8
	tests := []struct {
		name   string
		signal syscall.Signal
		// maxRepeats is how many requests beyond one per device may arrive.
		maxRepeats int
	}{
		{"SIGTERM drains", syscall.SIGTERM, 0},
		{"SIGKILL resends only what was in flight", syscall.SIGKILL, workers},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRun(t, bin, workers)
			victim := r.start("push-a")
			r.start("push-b")
			r.logoutTenant()
			testenv.Eventually(t, "a fifth of the pushes", func() bool { all, _, _ := r.apns.snapshot(); return all >= devices/5 })
			if err := victim.cmd.Process.Signal(tt.signal); err != nil {
				t.Fatal(err)
			}
			stoppedAt, _, _ := r.apns.snapshot()
			err := victim.wait(t)
			if tt.signal == syscall.SIGTERM {
				if err != nil {
					t.Fatalf("push-a after SIGTERM: %v, want a clean exit", err)
				}
				// Nothing it claimed is left waiting for its lease.
				var held int
				if err := r.pool.QueryRow(r.ctx, "SELECT count(*) FROM push_deliveries WHERE status = 'sending' AND claimed_by = 'push-a'").Scan(&held); err != nil || held != 0 {
					t.Errorf("push-a exited holding %d deliveries (%v)", held, err)
				}
			}

			testenv.Eventually(t, "every device pushed and recorded", func() bool {
				var pushed int
				_ = r.pool.QueryRow(r.ctx, "SELECT count(*) FROM push_deliveries WHERE status = 'pushed'").Scan(&pushed)
				_, n, _ := r.apns.snapshot()
				return n == devices && pushed == devices
			})
			all, n, bad := r.apns.snapshot()
			if bad > 0 {
				t.Fatalf("%d requests APNs would refuse", bad)
			}
			r.apns.mu.Lock()
			repeats := 0
			for tok, ids := range r.apns.ids {
				for _, id := range ids[1:] {
					if id != ids[0] {
						t.Errorf("device %s got two different pushes (%v)", tok, ids)
					}
					repeats++
				}
			}
			r.apns.mu.Unlock()
			t.Logf("%s after %d pushes; %d requests to %d devices, %d repeats", tt.signal, stoppedAt, all, n, repeats)
			if repeats > tt.maxRepeats {
				t.Errorf("%d repeated pushes, want at most %d (what push-a had in flight)", repeats, tt.maxRepeats)
			}
			if all != devices+repeats {
				t.Errorf("%d requests, want %d devices plus %d repeats", all, devices, repeats)
			}

			var rows, byA, byB, again int
			if err := r.pool.QueryRow(r.ctx, `SELECT count(*), count(*) FILTER (WHERE claimed_by = 'push-a'),
					count(*) FILTER (WHERE claimed_by = 'push-b'), count(*) FILTER (WHERE attempts <> 1)
				FROM push_deliveries`).Scan(&rows, &byA, &byB, &again); err != nil {
				t.Fatal(err)
			}
			if rows != devices {
				t.Errorf("%d deliveries recorded, want %d", rows, devices)
			}
			if byA == 0 || byB == 0 || all <= stoppedAt {
				t.Errorf("push-a recorded %d, push-b %d, %d requests after the stop: want both replicas to have pushed, and pushes after the stop", byA, byB, all-stoppedAt)
			}
			if tt.signal == syscall.SIGTERM && again != 0 {
				t.Errorf("%d deliveries attempted more than once after a SIGTERM", again)
			}
		})
	}
}

// devices is the number of mobile devices of the tenant logged out.
const devices = 5000

// run is one evictd with a tenant of devices mobile sessions, a fake APNs,
// and the evict-push replicas started against them.
type run struct {
	t    *testing.T
	ctx  context.Context
	bin  string
	apns *apnsCounter
	env  []string
	api  *client.Client
	pool *pgxpool.Pool
}

func startRun(t *testing.T, bin string, workers int) *run {
	t.Helper()
	apns := &apnsCounter{ids: map[string][]string{}, wait: 2 * time.Millisecond}
	srv := httptest.NewUnstartedServer(apns)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	certFile := writeFile(t, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	keyFile := writeFile(t, "AuthKey.p8", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))

	dbURL := testenv.Database(t)
	ctx, cancel := context.WithCancel(context.Background())
	// evictd's embedded NATS as shipped: the replicas connect as its
	// notifier user, whose permissions are their consumer's alone.
	d, err := evictd.Start(ctx, evictd.Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", DatabaseURL: dbURL,
		HTTPAddr: "127.0.0.1:0", AdminToken: "push-token", SessionMaxAge: time.Hour, Replicas: 1, RelayBatch: 1000,
		HeartbeatInterval: 100 * time.Millisecond, Logger: testenv.Quiet})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = d.Wait() })
	env := append(os.Environ(), "EVICT_NATS_URL="+d.NotifierNATSURL, "DATABASE_URL="+dbURL, "EVICT_HTTP_ADDR=127.0.0.1:0",
		"EVICT_PUSH_WORKERS="+strconv.Itoa(workers), "EVICT_PUSH_LEASE=3s",
		"EVICT_APNS_URL="+srv.URL, "EVICT_APNS_KEY_FILE="+keyFile, "EVICT_APNS_KEY_ID=ABC123DEFG",
		"EVICT_APNS_TEAM_ID=TEAM123456", "EVICT_APNS_TOPIC=com.example.field", "SSL_CERT_FILE="+certFile)
	return &run{t: t, ctx: ctx, bin: bin, apns: apns, env: env,
		api: client.New("http://"+d.HTTPAddr, "push-token", nil), pool: testenv.Pool(t, dbURL)}
}

// logoutTenant registers devices mobile sessions in tenant "field" and logs
// the whole tenant out.
func (r *run) logoutTenant() {
	t := r.t
	t.Helper()
	if _, err := r.api.CreateTenant(r.ctx, "field"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.pool.Exec(r.ctx, `INSERT INTO sessions (tenant_id, session_id, user_id, client, issued_at, push_provider, push_token)
		SELECT 'field', 'm' || i, 'tech-' || i, 'mobile', now() - interval '1 minute', 'apns', 'token-' || i
		FROM generate_series(1, $1) AS i`, devices); err != nil {
		t.Fatal(err)
	}
	if _, err := r.api.LogoutTenant(r.ctx, "field", ""); err != nil {
		t.Fatal(err)
	}
}

// replica is a running evict-push process.
type replica struct {
	cmd  *exec.Cmd
	done chan error
}

// start runs an evict-push replica named instance and waits until its
// notifier runs. Its log is shown if the test fails.
func (r *run) start(instance string) *replica {
	t := r.t
	t.Helper()
	cmd := exec.Command(r.bin)
	cmd.Env = append(r.env, "EVICT_INSTANCE="+instance)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rep := &replica{cmd: cmd, done: make(chan error, 1)}
	ready := make(chan struct{})
	var logMu sync.Mutex
	var log []string
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logMu.Lock()
			log = append(log, sc.Text())
			logMu.Unlock()
			if strings.Contains(sc.Text(), "notifier running") {
				close(ready)
			}
		}
		// Wait only once the pipe is drained, as exec requires.
		rep.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-rep.done
		if t.Failed() {
			logMu.Lock()
			defer logMu.Unlock()
			t.Logf("%s log:\n%s", instance, strings.Join(log, "\n"))
		}
	})
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not start", instance)
	}
	return rep
}

// wait returns how the replica exited.
func (rep *replica) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-rep.done:
		rep.done <- err
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("replica did not exit within 60s of its signal")
		return nil
	}
}
