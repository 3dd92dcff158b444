package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/pkg/client"
	"github.com/evict-dev/evict/pkg/guard"
)

// TestMain lets the test binary serve as the evictd process of
// TestDaemonModes, as evict-bench's own executable does.
func TestMain(m *testing.M) {
	if os.Getenv(ChildEnv) != "" {
		if err := ServeDaemon(); err != nil {
			fmt.Fprintln(os.Stderr, "evictd child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestDaemonModes starts evictd in each mode the bench offers: a logout
// sent to the admin API at the address given must reach a guard on the
// NATS address given, and after stop nothing may listen on the API's port.
func TestDaemonModes(t *testing.T) {
	for _, mode := range []string{EvictdInProcess, EvictdProcess} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			spec := daemonSpec{DataDir: t.TempDir(), DatabaseURL: testenv.Database(t), AdminToken: "evt_bench_daemon_test", LogLevel: slog.LevelError}
			d, err := startDaemon(ctx, Config{Evictd: mode, Logger: testenv.Quiet}, spec)
			if err != nil {
				t.Fatal(err)
			}
			stopped := false
			t.Cleanup(func() {
				if !stopped {
					_ = d.stop()
				}
			})
			if (d.pid != 0) != (mode == EvictdProcess) {
				t.Errorf("evictd's pid %d in mode %s", d.pid, mode)
			}
			if d.AdminToken != spec.AdminToken {
				t.Errorf("admin token %q, want %q", d.AdminToken, spec.AdminToken)
			}
			api := client.New("http://"+d.HTTPAddr, d.AdminToken, nil)
			if _, err := api.CreateTenant(ctx, "acme"); err != nil {
				t.Fatalf("create a tenant through the admin API: %v", err)
			}
			g := testenv.Guard(t, d.NATSURL, guard.Config{})
			s := guard.Session{Tenant: "acme", User: "ann", ID: "s1", IssuedAt: time.Now().Add(-time.Minute)}
			if err := g.Check(s); err != nil {
				t.Fatalf("check before the logout: %v", err)
			}
			if _, err := api.LogoutUser(ctx, "acme", "ann", "bench daemon test"); err != nil {
				t.Fatalf("logout: %v", err)
			}
			testenv.Eventually(t, "guard refuses the session", func() bool { return errors.Is(g.Check(s), guard.ErrSessionRevoked) })
			nc, err := nats.Connect(d.ServiceNATSURL)
			if err != nil {
				t.Fatalf("connect as evictd's NATS user: %v", err)
			}
			nc.Close()

			if err := d.stop(); err != nil {
				t.Fatalf("stop: %v", err)
			}
			stopped = true
			c, err := net.Dial("tcp", d.HTTPAddr)
			if err == nil {
				c.Close()
				t.Fatalf("admin API at %s still accepts connections after stop", d.HTTPAddr)
			}
		})
	}
}

func TestDaemonUnknownMode(t *testing.T) {
	_, err := startDaemon(context.Background(), Config{Evictd: "elsewhere"}, daemonSpec{})
	if err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("mode elsewhere: got %v, want an error naming the modes", err)
	}
}
