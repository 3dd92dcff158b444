package bus_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/evict-dev/evict/internal/bus"
)

// syncBuffer is a bytes.Buffer that the connection's callback goroutine
// and the test may use at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestLogAsyncErrors makes a subscription a slow consumer: the error must
// reach the JSON log, naming the connection and the subject.
func TestLogAsyncErrors(t *testing.T) {
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Name: "bus-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	nc, err := nats.Connect(ns.ClientURL(), nats.Name("slow"), bus.LogAsyncErrors(log))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	release := make(chan struct{})
	sub, err := nc.Subscribe("work", func(*nats.Msg) { <-release })
	if err != nil {
		t.Fatal(err)
	}
	defer close(release)
	if err := sub.SetPendingLimits(1, 1<<20); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := nc.Publish("work", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "NATS asynchronous error") {
		if time.Now().After(deadline) {
			t.Fatalf("no asynchronous error logged after 5 s; log: %q", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	line, _, _ := strings.Cut(logs.String(), "\n")
	var rec struct {
		Level, Msg, Err, Conn, Subject string
	}
	if err := json.Unmarshal([]byte(line), &rec); err != nil {
		t.Fatalf("log line is not JSON: %v: %q", err, line)
	}
	if rec.Level != "ERROR" || rec.Conn != "slow" || rec.Subject != "work" || !strings.Contains(rec.Err, "slow consumer") {
		t.Errorf("logged %+v, want level ERROR, conn slow, subject work and a slow consumer error", rec)
	}
}
