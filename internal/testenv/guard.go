package testenv

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/evict-dev/evict/pkg/guard"
)

// Quiet is a logger that discards everything, for components under test.
var Quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Guard connects a guard to the NATS server at url (with opts, e.g.
// guard.KeyOptions), runs it until the test ends, and waits until it is
// ready. cfg.Conn is set here; a nil cfg.Logger is Quiet.
func Guard(t testing.TB, url string, cfg guard.Config, opts ...nats.Option) *guard.Guard {
	t.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(20 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatalf("testenv: guard connect: %v", err)
	}
	cfg.Conn = nc
	if cfg.Logger == nil {
		cfg.Logger = Quiet
	}
	g, err := guard.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("guard Run: %v", err)
		}
		nc.Close()
	})
	select {
	case <-g.Ready():
	case err := <-done:
		t.Fatalf("testenv: guard stopped before ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("testenv: guard not ready after 60s")
	}
	return g
}

// Eventually polls cond every few milliseconds until it holds. The 60 s
// deadline is for liveness, never a latency assertion.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
