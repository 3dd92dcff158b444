package bus_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/evict-dev/evict/internal/bus"
	"github.com/evict-dev/evict/internal/testenv"
)

// TestLogAsyncErrors makes a subscription a slow consumer: the error must
// reach the JSON log, naming the connection and the subject.
func TestLogAsyncErrors(t *testing.T) {
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Name: "bus-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	log, logs := testenv.NewLogs()
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

	testenv.Eventually(t, "asynchronous error logged", func() bool { return len(logs.Records(t, "NATS asynchronous error")) > 0 })
	rec := logs.Records(t, "NATS asynchronous error")[0]
	if rec["level"] != "ERROR" || rec["conn"] != "slow" || rec["subject"] != "work" || !strings.Contains(fmt.Sprint(rec["err"]), "slow consumer") {
		t.Errorf("logged %v, want level ERROR, conn slow, subject work and a slow consumer error", rec)
	}
}
