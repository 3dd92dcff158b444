package evictd_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/pkg/client"
	"github.com/evict-dev/evict/pkg/guard"
)

var leaderLine = regexp.MustCompile(`(?m)^evict_relay_leader (\d)`)

func isLeader(t *testing.T, addr string) bool {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := leaderLine.FindSubmatch(b)
	return m != nil && string(m[1]) == "1"
}

// TestReplicasShareOneRelayLeader runs three evictd replicas on one database
// and one NATS server: exactly one relays; commands sent to any replica reach
// the guards; when the leader stops, another takes over.
func TestReplicasShareOneRelayLeader(t *testing.T) {
	ns := testenv.NATS(t)
	dbURL := testenv.Database(t)
	type replica struct {
		d    interface{ Wait() error }
		addr string
		api  *client.Client
		stop func()
	}
	var rs []replica
	for i := 0; i < 3; i++ {
		d, stop := startDaemon(t, dbURL, ns.ClientURL())
		rs = append(rs, replica{d, d.HTTPAddr, client.New("http://"+d.HTTPAddr, token, nil), stop})
	}
	g := testenv.Guard(t, ns.ClientURL(), guard.Config{})
	ctx := context.Background()
	if _, err := rs[0].api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	leader := -1
	testenv.Eventually(t, "exactly one leader", func() bool {
		n := 0
		for i, r := range rs {
			if isLeader(t, r.addr) {
				n, leader = n+1, i
			}
		}
		return n == 1
	})
	issued := time.Now().Add(-time.Minute)
	revokedVia := func(r replica, user string) {
		t.Helper()
		if _, err := r.api.LogoutUser(ctx, "acme", user, ""); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, "revocation of "+user, func() bool {
			return errors.Is(g.Check(guard.Session{Tenant: "acme", User: user, ID: "s", IssuedAt: issued}), guard.ErrSessionRevoked)
		})
	}
	for i, r := range rs {
		revokedVia(r, fmt.Sprintf("via-replica-%d", i))
	}

	rs[leader].stop()
	var alive []replica
	for i, r := range rs {
		if i != leader {
			alive = append(alive, r)
		}
	}
	testenv.Eventually(t, "a new leader", func() bool {
		n := 0
		for _, r := range alive {
			if isLeader(t, r.addr) {
				n++
			}
		}
		return n == 1
	})
	for i, r := range alive {
		revokedVia(r, fmt.Sprintf("after-failover-%d", i))
	}
}
