package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/evict-dev/evict/internal/bench/report"
	"github.com/evict-dev/evict/internal/bench/stats"
)

// Names of the baseline rows.
const (
	baseLookup = "PostgreSQL session lookup per request (SELECT by key, one connection)"
	baseCache  = "cache refreshed every %s: command → cache refuses"
)

// lookup is what a database-checked session costs: one SELECT of the
// session row per request, on the TenantSessions tenant, one after another
// on one connection. Besides the latency it measures the CPU time of both
// ends (this process and the PostgreSQL backend), from which it derives
// the lookups one core sustains.
func (e *env) lookup(ctx context.Context, rep *report.Report) error {
	conn, err := pgx.ConnectConfig(ctx, e.pool.Config().ConnConfig)
	if err != nil {
		return fmt.Errorf("bench: lookup: %w", err)
	}
	defer conn.Close(ctx)
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		return fmt.Errorf("bench: lookup: %w", err)
	}
	tenant := fmt.Sprintf("tenant-%d", e.cfg.TenantSessions)
	users := e.cfg.TenantSessions / 4
	var loaded bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)", tenant).Scan(&loaded); err != nil {
		return fmt.Errorf("bench: lookup: %w", err)
	}
	if !loaded { // the tenant-wide scenario did not run
		if err := e.addSessions(ctx, tenant, "t", users, 4, 0, 1); err != nil {
			return err
		}
	}
	const q = `SELECT revoked_at IS NULL AND ended_at IS NULL FROM sessions WHERE tenant_id = $1 AND session_id = $2`
	one := func() (time.Duration, error) {
		id := "t" + itoa(rand.IntN(users)) + "-" + itoa(rand.IntN(4))
		start := time.Now()
		var ok bool
		err := conn.QueryRow(ctx, q, tenant, id).Scan(&ok)
		return time.Since(start), err
	}
	for range 1000 { // warm the plan cache and the buffers
		if _, err := one(); err != nil {
			return fmt.Errorf("bench: lookup: %w", err)
		}
	}
	n := e.cfg.Lookups
	lat := make([]time.Duration, 0, n)
	selfBefore, beBefore := selfCPU(), procCPU(backend)
	start := time.Now()
	for range n {
		d, err := one()
		if err != nil {
			return fmt.Errorf("bench: lookup: %w", err)
		}
		lat = append(lat, d)
	}
	span := time.Since(start)
	cpu := (selfCPU() - selfBefore) + (procCPU(backend) - beBefore)
	perLookup := cpu / time.Duration(n)
	res := result{sum: stats.Summarize(lat, span), lat: lat}
	rep.Add(report.Row{Scenario: "baseline", Name: baseLookup, Summary: res.sum, Extra: []report.Metric{
		{Name: "CPU per lookup (bench process + PostgreSQL backend)", Value: float64(perLookup) / 1e3, Unit: "µs"},
		{Name: "lookups one core sustains", Value: float64(time.Second) / float64(perLookup), Unit: "/s"},
	}})
	rep.Curves = append(rep.Curves, curve("baseline: "+baseLookup, res))
	return nil
}

// selfCPU is the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the CPU time process pid has used, from /proc (Linux; 0
// elsewhere). The kernel counts it in USER_HZ ticks, 100 a second.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, field 2, may hold spaces; count from the ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// cache is what a 10-second auto-refresh or short cache TTL gives: a copy
// of the revoked users reloaded from PostgreSQL every CacheRefresh. The
// same commands, at CacheRate for CacheDuration, go to evict's guards; for
// each, the staleness is the time from the command's due time to the
// refresh that made the cache refuse the user.
func (e *env) cache(ctx context.Context, rep *report.Report) error {
	const base = "cache"
	n := int(e.cfg.CacheRate * e.cfg.CacheDuration.Seconds())
	tenants := e.spread(base, n)
	var mu sync.Mutex
	visible := map[string]time.Time{}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	refreshed := make(chan error, 1)
	go func() {
		tick := time.NewTicker(e.cfg.CacheRefresh)
		defer tick.Stop()
		for {
			select {
			case <-cctx.Done():
				refreshed <- nil
				return
			case <-tick.C:
			}
			rows, err := e.pool.Query(cctx, "SELECT user_id FROM user_watermarks WHERE tenant_id = ANY($1)", tenants)
			if err != nil {
				refreshed <- err
				return
			}
			users, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				refreshed <- err
				return
			}
			now := time.Now()
			mu.Lock()
			for _, u := range users {
				if _, ok := visible[u]; !ok {
					visible[u] = now
				}
			}
			all := len(visible) == n
			mu.Unlock()
			if all {
				refreshed <- nil
				return
			}
		}
	}()
	res, err := e.logoutLoad(ctx, base, n, e.cfg.CacheRate, 0, len(e.fleet), nil, nil)
	if err != nil {
		return fmt.Errorf("bench: cache baseline: %w", err)
	}
	rep.Add(report.Row{Scenario: "baseline", Name: fmt.Sprintf("API → %d guards refuse, %s/s (same commands as the cache)", len(e.fleet), report.Num(e.cfg.CacheRate)),
		Summary: res.sum, Floor: floorChain(len(e.fleet))})
	select {
	case err := <-refreshed:
		if err != nil {
			return fmt.Errorf("bench: cache refresh: %w", err)
		}
	case <-time.After(3 * e.cfg.CacheRefresh):
		return fmt.Errorf("bench: cache did not see all %d revocations", n)
	}
	mu.Lock()
	defer mu.Unlock()
	stale := make([]time.Duration, 0, n)
	sched := stats.Schedule{Start: res.start, Interval: time.Duration(float64(time.Second) / e.cfg.CacheRate)}
	for i := range n {
		at, ok := visible["u"+itoa(i)]
		if !ok {
			return fmt.Errorf("bench: cache never saw u%d", i)
		}
		stale = append(stale, at.Sub(sched.Due(i)))
	}
	cres := result{sum: stats.Summarize(stale, 0), lat: stale}
	rep.Add(report.Row{Scenario: "baseline", Name: fmt.Sprintf(baseCache, e.cfg.CacheRefresh), Summary: cres.sum})
	rep.Curves = append(rep.Curves, curve("baseline: "+fmt.Sprintf(baseCache, e.cfg.CacheRefresh), cres))
	return nil
}
