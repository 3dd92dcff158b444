package guard_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/pkg/guard"
)

// BenchmarkCheck measures the per-request check of a live guard loaded
// through NATS with 0, 100,000 and 1,000,000 revoked users; "hit" checks a
// revoked user, "miss" a valid one (the common case). Run with -cpu 1,2 to
// see the parallel case scale. The guards stay fresh for the whole run
// (one heartbeat, MaxStaleness of an hour), except in "stale", which
// measures the check of a guard cut off from evict under FailOpen.
func BenchmarkCheck(b *testing.B) {
	for _, n := range []int{0, 100_000, 1_000_000} {
		p := newPublisher(b)
		nb := time.Now()
		for i := 0; i < n; i++ {
			p.user("acme", fmt.Sprintf("user-%07d", i), nb)
		}
		p.heartbeat()
		g := testenv.Guard(b, p.url, guard.Config{MaxStaleness: time.Hour})
		if g.Entries() != n {
			b.Fatalf("loaded %d entries, want %d", g.Entries(), n)
		}
		issued := nb.Add(-time.Minute)
		hit := guard.Session{Tenant: "acme", User: "user-0000007", ID: "3f9a1c2e-session", IssuedAt: issued}
		miss := guard.Session{Tenant: "acme", User: "someone-else", ID: "3f9a1c2e-session", IssuedAt: issued}
		for _, c := range []struct {
			name string
			s    guard.Session
			want bool
		}{{"miss", miss, false}, {"hit", hit, n > 0}} {
			b.Run(fmt.Sprintf("entries=%d/%s", n, c.name), func(b *testing.B) {
				if got := g.Check(c.s) != nil; got != c.want {
					b.Fatalf("Check revoked=%v, want %v", got, c.want)
				}
				b.ReportAllocs()
				for b.Loop() {
					_ = g.Check(c.s)
				}
			})
			b.Run(fmt.Sprintf("entries=%d/%s/parallel", n, c.name), func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						_ = g.Check(c.s)
					}
				})
			})
		}
	}
}

// BenchmarkCheckStale is BenchmarkCheck's miss on a guard whose state is
// stale (no heartbeat) under FailOpen: each check is let through and counted.
func BenchmarkCheckStale(b *testing.B) {
	p := newPublisher(b)
	p.flush()
	g := testenv.Guard(b, p.url, guard.Config{})
	if !errors.Is(g.Healthy(), guard.ErrStateStale) {
		b.Fatalf("Healthy() = %v, want ErrStateStale", g.Healthy())
	}
	s := guard.Session{Tenant: "acme", User: "someone", ID: "3f9a1c2e-session", IssuedAt: time.Now()}
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = g.Check(s)
		}
	})
	b.Run("miss/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_ = g.Check(s)
			}
		})
	})
}

// BenchmarkCheckSpread is BenchmarkCheck's check as a busy backend makes
// it: each check is of another session, of another user, at random among
// 1,000,000 of them, so the slots it probes are rarely in cache.
// BenchmarkCheck asks for one session over and over, whose slots stay in
// cache; this one measures what the check costs once the users' table
// (48 MiB at 1,000,000 entries) is larger than the caches. The guard holds
// 1,000,000 revoked users, published in batches as a bulk logout does;
// "miss" checks sessions of other users (the common case), "hit" sessions
// of revoked users. Not run by evict-bench, whose check scenario is
// BenchmarkCheck.
func BenchmarkCheckSpread(b *testing.B) {
	const n = 1_000_000
	p := newPublisher(b)
	nb := time.Now()
	batch := make([]string, 0, events.MaxUsersPerEvent)
	for i := range n {
		batch = append(batch, fmt.Sprintf("user-%07d", i))
		if len(batch) == cap(batch) {
			p.users("acme", fmt.Sprint("b", i), batch, nb)
			batch = batch[:0]
		}
	}
	p.heartbeat()
	g := testenv.Guard(b, p.url, guard.Config{MaxStaleness: time.Hour})
	if g.Entries() != n {
		b.Fatalf("loaded %d entries, want %d", g.Entries(), n)
	}
	issued := nb.Add(-time.Minute)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct {
		name   string
		prefix string // of the sessions' users
		want   bool
	}{{"miss", "someone-", false}, {"hit", "user-", true}} {
		sessions := make([]guard.Session, n)
		for i, u := range rng.Perm(n) {
			sessions[i] = guard.Session{Tenant: "acme", User: fmt.Sprintf("%s%07d", c.prefix, u),
				ID: fmt.Sprintf("session-%07d", u), IssuedAt: issued}
		}
		for _, s := range sessions[:100] {
			if got := g.Check(s) != nil; got != c.want {
				b.Fatalf("Check(%s) revoked=%v, want %v", s.User, got, c.want)
			}
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				_ = g.Check(sessions[i])
				if i++; i == n {
					i = 0
				}
			}
		})
	}
}
