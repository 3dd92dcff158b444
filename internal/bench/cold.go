package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"testing"
	"time"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/bench/report"
	"github.com/evict-dev/evict/internal/bench/stats"
	"github.com/evict-dev/evict/internal/netproxy"
	"github.com/evict-dev/evict/pkg/guard"
)

// Tenants whose revocations are published straight to EVICT_STATE.
const (
	coldTenant    = "cold"
	heldTenant    = "held"
	catchupTenant = "catchup"
)

// publishUsers writes n user revocations of tenant to EVICT_STATE as the
// relay would, without the database: the bulk scenario measures that path,
// and here only a stream of that size matters.
func (e *env) publishUsers(ctx context.Context, tenant string, n int) error {
	nb := time.Now()
	for i := range n {
		user := "c" + itoa(i)
		subject, err := events.UserStateSubject(tenant, user)
		if err != nil {
			return err
		}
		b, err := json.Marshal(events.New(fmt.Sprintf("bench-%s-%d", tenant, i), events.TypeUserRevoked, tenant, "users/"+user, nb,
			events.UserRevoked{Tenant: tenant, User: user, NotBefore: nb, OperationID: "bench", Cause: events.CauseLogout}))
		if err != nil {
			return fmt.Errorf("bench: encode: %w", err)
		}
		if _, err := e.js.PublishAsync(subject, b); err != nil {
			return fmt.Errorf("bench: publish: %w", err)
		}
		if i%4096 == 4095 || i == n-1 {
			select {
			case <-e.js.PublishAsyncComplete():
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Minute):
				return errors.New("bench: publish acknowledgements missing after 1m")
			}
		}
	}
	return nil
}

// coldStart publishes ColdEntries revocations and starts new guards that
// load them (ColdRuns times), measuring the time to ready and the heap
// each entry takes. The last guard stays for the check benchmarks and the
// catch-up, connected through a proxy that can cut it off.
func (e *env) coldStart(ctx context.Context, rep *report.Report) (cold *benchGuard, proxy *netproxy.Proxy, err error) {
	if err := e.publishUsers(ctx, coldTenant, e.cfg.ColdEntries); err != nil {
		return nil, nil, err
	}
	u, err := url.Parse(e.d.NATSURL)
	if err != nil {
		return nil, nil, fmt.Errorf("bench: %w", err)
	}
	if proxy, err = netproxy.Start(u.Host); err != nil {
		return nil, nil, err
	}
	u.Host = proxy.Addr()
	var ready []time.Duration
	var heap float64
	for i := range e.cfg.ColdRuns {
		if cold != nil {
			cold.stop()
			cold = nil
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		g, took, err := e.startGuard(ctx, fmt.Sprintf("bench-cold-%d", i), u.String(), append([]string{coldTenant}, e.spread(catchupTenant, e.catchupOps())...))
		if err != nil {
			proxy.Close()
			return nil, nil, err
		}
		cold = g
		runtime.GC()
		runtime.ReadMemStats(&after)
		if got := g.Entries(); got != e.cfg.ColdEntries {
			return nil, nil, fmt.Errorf("bench: cold guard ready with %d entries, want %d", got, e.cfg.ColdEntries)
		}
		ready = append(ready, took)
		heap = float64(after.HeapAlloc-before.HeapAlloc) / float64(e.cfg.ColdEntries)
	}
	sum := stats.Summarize(ready, 0)
	rep.Add(report.Row{Scenario: "cold start", Name: fmt.Sprintf("new guard loads %s entries → ready", report.Num(float64(e.cfg.ColdEntries))),
		Summary: sum, Extra: []report.Metric{
			{Name: "entries loaded per second (median run)", Value: float64(e.cfg.ColdEntries) / sum.P50.Seconds(), Unit: "entries/s"},
			{Name: "heap per revocation entry (whole guard)", Value: heap, Unit: "B"},
		}})
	return cold, proxy, nil
}

// checks runs the Go benchmark of Guard.Check, serial and parallel, with
// GOMAXPROCS 1 and 2, on guards holding 0, HeldEntries and ColdEntries
// revocations.
func (e *env) checks(ctx context.Context, rep *report.Report, cold *benchGuard) error {
	if err := e.publishUsers(ctx, heldTenant, e.cfg.HeldEntries); err != nil {
		return err
	}
	empty, _, err := e.startGuard(ctx, "bench-check-empty", e.d.NATSURL, []string{"nobody"})
	if err != nil {
		return err
	}
	defer empty.stop()
	held, _, err := e.startGuard(ctx, "bench-check-held", e.d.NATSURL, []string{heldTenant})
	if err != nil {
		return err
	}
	defer held.stop()
	procs := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(procs)
	for _, c := range []struct {
		g      *benchGuard
		tenant string
	}{{empty, "nobody"}, {held, heldTenant}, {cold, coldTenant}} {
		issued := time.Now().Add(-time.Hour)
		for _, k := range []struct {
			name string
			s    guard.Session
		}{
			{"miss", guard.Session{Tenant: c.tenant, User: "someone-else", ID: "3f9a1c2e-session", IssuedAt: issued}},
			{"hit", guard.Session{Tenant: c.tenant, User: "c7", ID: "3f9a1c2e-session", IssuedAt: issued}},
		} {
			if want := c.g.Entries() > 0 && k.name == "hit"; errors.Is(c.g.Check(k.s), guard.ErrSessionRevoked) != want {
				return fmt.Errorf("bench: check %s on %d entries: revoked is not %v", k.name, c.g.Entries(), want)
			}
			for _, parallel := range []bool{false, true} {
				for _, cpu := range e.cfg.CPUs {
					runtime.GOMAXPROCS(cpu)
					r := benchmarkCheck(c.g.Guard, k.s, parallel)
					rep.Checks = append(rep.Checks, report.Check{Entries: c.g.Entries(), Case: k.name, Parallel: parallel, CPU: cpu,
						NsPerOp: float64(r.T.Nanoseconds()) / float64(r.N), AllocsPerOp: r.AllocsPerOp(), BytesPerOp: r.AllocedBytesPerOp()})
				}
			}
		}
	}
	return nil
}

// benchmarkCheck is the Go benchmark of one Check, as pkg/guard's
// BenchmarkCheck runs it; parallel uses b.RunParallel, whose ns/op is wall
// time per check across GOMAXPROCS goroutines.
func benchmarkCheck(g *guard.Guard, s guard.Session, parallel bool) testing.BenchmarkResult {
	return testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		if parallel {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_ = g.Check(s)
				}
			})
			return
		}
		for b.Loop() {
			_ = g.Check(s)
		}
	})
}

// catchupOps is the number of commands the cut-off guard misses.
func (e *env) catchupOps() int {
	return int(e.cfg.CatchupRate * e.cfg.Disconnect.Seconds())
}

// catchUp cuts the cold guard off, sends commands at CatchupRate for
// Disconnect, restores the connection, and measures how long the guard
// takes to apply every revocation it missed and to be fresh again.
func (e *env) catchUp(ctx context.Context, rep *report.Report, cold *benchGuard, proxy *netproxy.Proxy) error {
	n := e.catchupOps()
	proxy.Cut()
	var restored time.Time
	fresh := make(chan time.Time, 1)
	res, err := e.logoutLoad(ctx, catchupTenant, n, e.cfg.CatchupRate, 0, 1, cold, func() {
		// The guard missed everything sent; it may also have gone stale
		// (no heartbeat for MaxStaleness).
		restored = time.Now()
		proxy.Restore()
		go func() {
			for cold.Healthy() != nil || cold.StateAge() > time.Since(restored) {
				if time.Since(restored) > time.Minute {
					return
				}
				time.Sleep(time.Millisecond)
			}
			fresh <- time.Now()
		}()
	})
	if err != nil {
		return fmt.Errorf("bench: catch-up: %w", err)
	}
	lat, last := res.t.doneSince(restored)
	took := last.Sub(restored)
	var freshAfter time.Duration
	select {
	case at := <-fresh:
		freshAfter = at.Sub(restored)
	case <-time.After(30 * time.Second):
	}
	rep.Add(report.Row{Scenario: "cold start",
		Name:    fmt.Sprintf("catch-up after %s cut off under %s commands/s", e.cfg.Disconnect, report.Num(e.cfg.CatchupRate)),
		Summary: stats.Summarize(lat, took), Extra: []report.Metric{
			{Name: "revocations missed", Value: float64(n), Unit: ""},
			{Name: "reconnect → all missed revocations applied", Value: ms(took), Unit: "ms"},
			{Name: "reconnect → fresh (heartbeat after the restore applied)", Value: ms(freshAfter), Unit: "ms"},
		}})
	return nil
}
