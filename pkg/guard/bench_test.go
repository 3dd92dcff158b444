package guard_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

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
