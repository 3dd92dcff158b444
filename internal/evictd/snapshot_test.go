package evictd_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/evictd"
	"github.com/evict-dev/evict/internal/snapshot"
	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/pkg/guard"
)

// TestGuardStartsFromSnapshot: users are logged out, one bulk command and
// single ones, snapshots are built, three more users are logged out. A new
// guard of every tenant loads the snapshot of every tenant (every user of
// the batch is an entry of its own) and reads only the stream after it, and
// refuses every one of the users; a bystander passes. A guard of one
// tenant does the same from its tenant's snapshot. Guards told not to use
// snapshots read the whole stream and answer the same.
func TestGuardStartsFromSnapshot(t *testing.T) {
	b := setup(t, 0)
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	var users []string
	for i := range 33 {
		users = append(users, fmt.Sprintf("u%02d", i))
	}
	if _, err := b.api.LogoutUsers(ctx, "acme", users[:25], "bulk"); err != nil {
		t.Fatal(err)
	}
	for _, u := range users[25:30] {
		if _, err := b.api.LogoutUser(ctx, "acme", u, ""); err != nil {
			t.Fatal(err)
		}
	}
	b.waitPublished(t)
	// Built as evictd's user (the guards connect as the guard user: what
	// they read of the snapshot, their NATS permissions allow).
	js := b.serviceJS(t)
	h, err := snapshot.Build(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if h.Entries != 30 {
		t.Fatalf("snapshot of %d entries, want the 30 users", h.Entries)
	}
	for _, u := range users[30:] {
		if _, err := b.api.LogoutUser(ctx, "acme", u, ""); err != nil {
			t.Fatal(err)
		}
	}
	b.waitPublished(t)

	tests := []struct {
		name   string
		cfg    guard.Config
		loaded float64
	}{
		{"every tenant", guard.Config{}, 30},
		{"no snapshot", guard.Config{NoSnapshot: true}, 0},
		{"one tenant", guard.Config{Tenants: []string{"acme"}}, 30},
		{"one tenant, no snapshot", guard.Config{Tenants: []string{"acme"}, NoSnapshot: true}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			tt.cfg.Registerer = reg
			g := testenv.Guard(t, b.d.NATSURL, tt.cfg)
			if got := testenv.Metric(t, reg, "evict_guard_snapshot_entries"); got != tt.loaded {
				t.Errorf("entries from the snapshot: %v, want %v", got, tt.loaded)
			}
			if g.Entries() != len(users) {
				t.Errorf("%d entries held, want %d", g.Entries(), len(users))
			}
			before := time.Now().Add(-time.Hour)
			testenv.Eventually(t, "fresh", func() bool { return g.StateAge() < time.Minute })
			for _, u := range users {
				if err := g.Check(guard.Session{Tenant: "acme", User: u, ID: u + "-web", IssuedAt: before}); !errors.Is(err, guard.ErrSessionRevoked) {
					t.Errorf("%s: Check = %v, want revoked", u, err)
				}
			}
			if err := g.Check(guard.Session{Tenant: "acme", User: "bystander", ID: "b-web", IssuedAt: before}); err != nil {
				t.Errorf("bystander: %v", err)
			}
		})
	}
}

// TestSnapshotOfAnotherStreamIsNotUsed: a snapshot whose stream was
// deleted and created again under the same name does not describe the new
// one; a guard reads the whole stream instead.
func TestSnapshotOfAnotherStreamIsNotUsed(t *testing.T) {
	b := setup(t, 0)
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.api.LogoutUser(ctx, "acme", "bob", ""); err != nil {
		t.Fatal(err)
	}
	b.waitPublished(t)
	js := b.serviceJS(t)
	if _, err := snapshot.Build(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	// The stream as an operator who recreated it would leave it: new, and
	// holding bob's revocation again (the relay republishes nothing, so
	// the test puts it there).
	msg, err := lastState(ctx, js, "acme", "bob")
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, events.StateStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if err := js.DeleteStream(ctx, events.StateStream); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // a new creation time
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, msg.Subject, msg.Data); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []guard.Config{{}, {Tenants: []string{"acme"}}} {
		reg := prometheus.NewRegistry()
		cfg.Registerer = reg
		g := testenv.Guard(t, b.d.NATSURL, cfg)
		if got := testenv.Metric(t, reg, "evict_guard_snapshot_entries"); got != 0 {
			t.Errorf("guard of %v loaded %v entries from a snapshot of the old stream", cfg.Tenants, got)
		}
		if g.Entries() != 1 {
			t.Errorf("guard of %v: %d entries, want bob's", cfg.Tenants, g.Entries())
		}
	}
}

// TestSnapshotBuilderKeepsUp: evictd configured to snapshot every message
// builds one that covers the stream.
func TestSnapshotBuilderKeepsUp(t *testing.T) {
	b := setup(t, 0, func(c *evictd.Config) { c.SnapshotEvery, c.SnapshotInterval = 1, 20*time.Millisecond })
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.api.LogoutUsers(ctx, "acme", []string{"ann", "bob"}, ""); err != nil {
		t.Fatal(err)
	}
	b.waitPublished(t)
	obs, err := b.serviceJS(t).ObjectStore(ctx, snapshot.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "a snapshot with ann and bob", func() bool {
		r, err := obs.Get(ctx, snapshot.Object)
		if err != nil {
			return false
		}
		defer r.Close()
		h, each, err := snapshot.ReadHeader(r)
		if err != nil {
			return false
		}
		found := map[string]bool{}
		err = each(func(e snapshot.Entry) error { found[e.ID] = e.Kind == events.KindUser; return nil })
		return err == nil && h.Entries == 2 && found["ann"] && found["bob"]
	})
}

// lastState is the state message of a user, read from the stream.
func lastState(ctx context.Context, js jetstream.JetStream, tenant, user string) (*jetstream.RawStreamMsg, error) {
	s, err := js.Stream(ctx, events.StateStream)
	if err != nil {
		return nil, err
	}
	subject, err := events.UserStateSubject(tenant, user)
	if err != nil {
		return nil, err
	}
	return s.GetLastMsgForSubject(ctx, subject)
}
