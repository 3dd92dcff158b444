package evictd_test

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/evict-dev/evict/internal/evictd"
	"github.com/evict-dev/evict/internal/testenv"
)

// TestNATSConnectionLogs: evictd warns when NATS drops one of its
// connections, naming the connection, and not when it closes them itself
// on a clean shutdown (nats.go reports both through the same handler).
func TestNATSConnectionLogs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// external runs evictd on a NATS server of the test's, which is
		// shut down under it before evictd stops.
		external bool
		// wantWarn: evictd's two connections are reported down at warn.
		wantWarn bool
	}{
		{name: "clean shutdown", external: false, wantWarn: false},
		{name: "NATS goes away", external: true, wantWarn: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			log, logs := testenv.NewLogs()
			var ns *server.Server
			natsURL := ""
			if tc.external {
				ns = testenv.NATS(t)
				natsURL = ns.ClientURL()
			}
			_, stop := startDaemon(t, testenv.Database(t), natsURL, func(c *evictd.Config) { c.Logger = log })
			if tc.external {
				ns.Shutdown()
				testenv.Eventually(t, "both connections reported down", func() bool { return len(logs.Records(t, "NATS disconnected")) == 2 })
			}
			stop()
			// nats.go runs the handler on its callback goroutine, which may
			// still be at it when evictd has stopped: wait until each of the
			// two connections has been reported, one way or the other.
			testenv.Eventually(t, "both connections reported", func() bool {
				return len(logs.Records(t, "NATS disconnected"))+len(logs.Records(t, "NATS connection closed")) >= 2
			})

			down := logs.Records(t, "NATS disconnected")
			if !tc.wantWarn {
				if len(down) != 0 {
					t.Errorf("clean shutdown logged %v, want no disconnection", down)
				}
				closed := map[any]bool{}
				for _, r := range logs.Records(t, "NATS connection closed") {
					if r["level"] != "DEBUG" {
						t.Errorf("logged %v, want level DEBUG", r)
					}
					closed[r["conn"]] = true
				}
				if !closed["evictd"] || !closed["evictd-wake"] {
					t.Errorf("connections reported closed: %v, want evictd and evictd-wake", closed)
				}
				return
			}
			conns := map[any]bool{}
			for _, r := range down {
				if r["level"] != "WARN" || r["err"] == nil || r["err"] == "" {
					t.Errorf("logged %v, want level WARN and the error", r)
				}
				conns[r["conn"]] = true
			}
			if !conns["evictd"] || !conns["evictd-wake"] {
				t.Errorf("connections reported down: %v, want evictd and evictd-wake", conns)
			}
		})
	}
}
