package snapshot_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/bus"
	"github.com/evict-dev/evict/internal/snapshot"
	"github.com/evict-dev/evict/internal/testenv"
)

// publishUsers writes users' revocations of tenant to EVICT_STATE as the
// relay would, MaxUsersPerEvent to a message.
func publishUsers(t *testing.T, js jetstream.JetStream, tenant string, users []string) {
	t.Helper()
	ctx := context.Background()
	nb := time.Now()
	for i := 0; i < len(users); i += events.MaxUsersPerEvent {
		batch := users[i:min(i+events.MaxUsersPerEvent, len(users))]
		id := "batch-" + batch[0] // one message per batch, as the relay names them
		subject, err := events.UsersStateSubject(tenant, id)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(events.New(id, events.TypeUsersRevoked, tenant, "users", nb,
			events.UsersRevoked{Tenant: tenant, Users: batch, NotBefore: nb, OperationID: "test", Cause: events.CauseLogout}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, subject, b); err != nil {
			t.Fatal(err)
		}
	}
}

func users(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		// Long names, so that a big tenant's snapshot takes several chunks.
		out[i] = fmt.Sprintf("%s-a-user-with-a-long-name-%06d", prefix, i)
	}
	return out
}

// readTenant reads tenant's snapshot and returns its header and entries.
func readTenant(t *testing.T, js jetstream.JetStream, tenant string) (snapshot.Header, []snapshot.Entry) {
	t.Helper()
	data, err := snapshot.ReadTenant(context.Background(), js, tenant, 10*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", tenant, err)
	}
	h, each, err := snapshot.ReadHeader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var entries []snapshot.Entry
	if err := each(func(e snapshot.Entry) error { entries = append(entries, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return h, entries
}

// TestTenantSnapshots: a tenant with at least the minimum of entries gets a
// snapshot of its own, in chunks, with only its entries; a smaller one gets
// none. Each build keeps the one before it and purges older ones. A
// snapshot that does not match its head is refused.
func TestTenantSnapshots(t *testing.T) {
	ctx := context.Background()
	js := testenv.JetStream(t, testenv.NATS(t).ClientURL())
	if err := bus.EnsureStreams(ctx, js, bus.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.ReadTenant(ctx, js, "big", time.Second); !errors.Is(err, snapshot.ErrNoTenantSnapshot) {
		t.Fatalf("before any build: %v, want ErrNoTenantSnapshot", err)
	}
	big := users("big", 16_000)
	publishUsers(t, js, "big", big[:15_000])
	publishUsers(t, js, "small", users("small", 10))

	const min = 100
	var builds []uint64
	for i, n := range []int{15_000, 15_500, 16_000} {
		if i > 0 {
			publishUsers(t, js, "big", big[n-500:n])
		}
		h, err := snapshot.Build(ctx, js, min)
		if err != nil {
			t.Fatal(err)
		}
		builds = append(builds, h.Seq)
		th, entries := readTenant(t, js, "big")
		if th.Seq != h.Seq || !th.StreamCreated.Equal(h.StreamCreated) || th.Entries != uint64(n) || len(entries) != n {
			t.Fatalf("build %d: big's snapshot %+v with %d entries, want sequence %d and %d entries", i, th, len(entries), h.Seq, n)
		}
		for _, e := range entries {
			if e.Tenant != "big" || e.Kind != events.KindUser {
				t.Fatalf("big's snapshot holds %+v", e)
			}
		}
	}
	if _, err := snapshot.ReadTenant(ctx, js, "small", time.Second); !errors.Is(err, snapshot.ErrNoTenantSnapshot) {
		t.Errorf("small, %d entries: %v, want no snapshot", 10, err)
	}

	s, err := js.Stream(ctx, snapshot.TenantStream)
	if err != nil {
		t.Fatal(err)
	}
	chunk := func(build uint64, n int) string {
		return snapshot.TenantPrefix + "big.c." + strconv.FormatUint(build, 10) + "." + strconv.Itoa(n)
	}
	for i, want := range []bool{false, true, true} {
		_, err := s.GetLastMsgForSubject(ctx, chunk(builds[i], 0))
		if got := err == nil; got != want {
			t.Errorf("build %d kept: %v (%v), want %v", i, got, err, want)
		}
	}
	if _, err := s.GetLastMsgForSubject(ctx, chunk(builds[2], 1)); err != nil {
		t.Errorf("the latest build has one chunk only: %v", err)
	}

	if _, err := js.Publish(ctx, chunk(builds[2], 0), []byte("evict-snapshot-1\nforged")); err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.ReadTenant(ctx, js, "big", time.Second); !errors.Is(err, snapshot.ErrFormat) {
		t.Errorf("a chunk replaced: %v, want ErrFormat", err)
	}
}
