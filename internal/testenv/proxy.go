package testenv

import (
	"testing"

	"github.com/evict-dev/evict/internal/netproxy"
)

// NewProxy listens on a random loopback port and forwards to target; the
// proxy can cut its connections off (see netproxy.Proxy). It is closed
// when the test ends.
func NewProxy(t testing.TB, target string) *netproxy.Proxy {
	t.Helper()
	p, err := netproxy.Start(target)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}
