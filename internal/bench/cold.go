package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"time"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/bench/report"
	"github.com/evict-dev/evict/internal/bench/stats"
	"github.com/evict-dev/evict/internal/netproxy"
	"github.com/evict-dev/evict/internal/snapshot"
	"github.com/evict-dev/evict/pkg/guard"
)

// Tenants whose revocations are published straight to EVICT_STATE.
const (
	coldTenant    = "cold"
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

// coldStart publishes ColdEntries revocations, has evictd build its
// snapshots of the state, and starts new guards (ColdRuns times each):
// guards of every tenant, which load the snapshot of every tenant and read
// the stream after it; then, for comparison, guards of the cold tenant and
// the catch-up tenants told not to use snapshots, which read their tenants'
// subjects of the stream from the start; then the same guards as they
// start by default, from the cold tenant's own snapshot (the catch-up
// tenants are too small to get one). It measures the time to ready and
// the heap each entry takes. The last guard stays for the catch-up,
// connected through a proxy that can cut it off.
func (e *env) coldStart(ctx context.Context, rep *report.Report) (cold *benchGuard, proxy *netproxy.Proxy, err error) {
	if err := e.publishUsers(ctx, coldTenant, e.cfg.ColdEntries); err != nil {
		return nil, nil, err
	}
	start := time.Now()
	h, err := snapshot.Build(ctx, e.js, snapshot.TenantMin)
	if err != nil {
		return nil, nil, fmt.Errorf("bench: %w", err)
	}
	built := time.Since(start)
	obs, err := e.js.ObjectStore(ctx, snapshot.Bucket)
	if err != nil {
		return nil, nil, fmt.Errorf("bench: %w", err)
	}
	info, err := obs.GetInfo(ctx, snapshot.Object)
	if err != nil {
		return nil, nil, fmt.Errorf("bench: %w", err)
	}
	u, err := url.Parse(e.d.NATSURL)
	if err != nil {
		return nil, nil, fmt.Errorf("bench: %w", err)
	}
	if proxy, err = netproxy.Start(u.Host); err != nil {
		return nil, nil, err
	}
	u.Host = proxy.Addr()
	some := append([]string{coldTenant}, e.spread(catchupTenant, e.catchupOps())...)
	for _, mode := range []struct {
		name string
		cfg  guard.Config
		// compare: a guard started otherwise than by default, reported
		// apart from the target
		compare bool
		extra   []report.Metric
	}{
		{name: "from evictd's snapshot, guard of every tenant", extra: []report.Metric{
			{Name: "snapshots built by evictd (reads the stream, stores every tenant's and the cold tenant's)", Value: built.Seconds(), Unit: "s"},
			{Name: "snapshot size", Value: float64(info.Size) / float64(h.Entries), Unit: "B per entry"},
		}},
		{name: "from the stream, without snapshots, guard of some tenants", cfg: guard.Config{Tenants: some, NoSnapshot: true}, compare: true},
		{name: "from its tenant's snapshot, guard of some tenants", cfg: guard.Config{Tenants: some}},
	} {
		var ready []time.Duration
		var heap float64
		entries := 0
		for i := range e.cfg.ColdRuns {
			if cold != nil {
				cold.stop()
				cold = nil
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			g, took, err := e.startGuard(ctx, fmt.Sprintf("bench-cold-%d", i), u.String(), mode.cfg)
			if err != nil {
				proxy.Close()
				return nil, nil, err
			}
			cold = g
			runtime.GC()
			runtime.ReadMemStats(&after)
			// A guard of every tenant also holds what earlier scenarios
			// revoked.
			if entries = g.Entries(); entries < e.cfg.ColdEntries {
				return nil, nil, fmt.Errorf("bench: cold guard ready with %d entries, want %d or more", entries, e.cfg.ColdEntries)
			}
			ready = append(ready, took)
			heap = float64(after.HeapAlloc-before.HeapAlloc) / float64(entries)
		}
		sum := stats.Summarize(ready, 0)
		name := fmt.Sprintf("new guard loads %s entries → ready, %s", report.Num(float64(entries)), mode.name)
		if mode.compare {
			name = fmt.Sprintf("for comparison: guard loads %s entries → ready, %s", report.Num(float64(entries)), mode.name)
		}
		rep.Add(report.Row{Scenario: "cold start", Name: name,
			Summary: sum, Extra: append([]report.Metric{
				{Name: "entries loaded per second (median run)", Value: float64(entries) / sum.P50.Seconds(), Unit: "entries/s"},
				{Name: "heap per revocation entry (whole guard)", Value: heap, Unit: "B"},
			}, mode.extra...)})
	}
	return cold, proxy, nil
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
