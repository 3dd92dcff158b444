// Package bench is evict-bench: it starts evictd (admin API, relay,
// registry, embedded NATS) in-process, or in a process of its own by
// running its executable again (ServeDaemon), on a PostgreSQL database of
// its own, runs real guards against it, drives open-loop load through the
// admin API, and measures, on one clock, how long a logout takes to be
// enforced by every guard, next to the physical floor measured in the same
// run and to what a team would use instead. cmd/evict-bench wires it to
// flags.
package bench

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/evict-dev/evict/internal/bench/report"
)

// Scenarios, in the order Run runs them.
var Scenarios = []string{"floor", "e2e", "bulk", "tenant", "baseline", "cold", "check"}

// Config sizes a run. Zero values are not defaults: cmd/evict-bench sets
// every field from its flags.
type Config struct {
	// Rate is the steady command rate, per second, of the floor and the
	// end-to-end runs; Duration how long each lasts after Warmup.
	Rate             float64
	Duration, Warmup time.Duration
	// Burst is the number of commands due at once in the burst runs.
	Burst int
	// Tenants is the number of tenants the logout commands of the
	// end-to-end and cache runs are spread over.
	Tenants int
	// Guards are the fleet sizes of the end-to-end runs; Fleet the size
	// kept for bulk, tenant-wide and the cache baseline (one of Guards,
	// so that the floor of the same size is measured).
	Guards []int
	Fleet  int
	// BulkUsers are logged out in one command, 3 sessions each.
	BulkUsers int
	// TenantSessions is the size of the big tenant; TenantLogouts the
	// tenant-wide commands sent to it and to a tenant of 1,000.
	TenantSessions, TenantLogouts int
	// ColdEntries are loaded by a new guard ColdRuns times.
	ColdEntries, ColdRuns int
	// CPUs are the GOMAXPROCS values of the check benchmarks (go test -cpu).
	CPUs []int
	// Disconnect is how long the cold guard is cut off while commands
	// arrive at CatchupRate.
	Disconnect  time.Duration
	CatchupRate float64
	// Lookups is the number of PostgreSQL lookups of the first baseline.
	Lookups int
	// The cache baseline refreshes every CacheRefresh while commands
	// arrive at CacheRate for CacheDuration.
	CacheRefresh, CacheDuration time.Duration
	CacheRate                   float64
	// Only lists the scenarios to run (names from Scenarios); empty runs all.
	Only []string
	// Settings are echoed into the report.
	Settings map[string]string
	// OpsDir, when set, receives each open-loop run's operations, one CSV
	// file a run (see writeOps).
	OpsDir string
	// Evictd is where evictd runs: EvictdProcess or EvictdInProcess.
	// EvictdCPUProfile and EvictdMemProfile, when set, receive the
	// profiles of its process (in-process, the bench's own cover it).
	Evictd                             string
	EvictdCPUProfile, EvictdMemProfile string
	// Logger is the bench's log; LogLevel is evictd's in its own process.
	Logger   *slog.Logger
	LogLevel slog.Level
}

// steadyOps is the number of operations of a steady run and its warmup.
func (c Config) steadyOps() (int, time.Duration) {
	return int(c.Rate * (c.Duration + c.Warmup).Seconds()), c.Warmup
}

func (c Config) runs(s string) bool {
	return len(c.Only) == 0 || slices.Contains(c.Only, s)
}

// Run runs the scenarios and returns their report. It needs PostgreSQL
// (EVICT_BENCH_DATABASE_URL, default the local server) and creates and
// drops a database evict_bench_<pid> there.
func Run(ctx context.Context, cfg Config) (*report.Report, error) {
	rep := &report.Report{Started: time.Now(), Settings: cfg.Settings}
	e, err := startEnv(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer e.close()
	if rep.Machine, rep.Versions, err = describe(ctx, e); err != nil {
		return nil, err
	}
	steps := []struct {
		name string
		run  func(context.Context, *report.Report) error
	}{
		{"floor", e.floor},
		{"e2e", e.endToEnd},
		{"bulk", func(ctx context.Context, rep *report.Report) error {
			if err := e.sizeFleet(ctx); err != nil {
				return err
			}
			return e.bulk(ctx, rep)
		}},
		{"tenant", func(ctx context.Context, rep *report.Report) error {
			if err := e.sizeFleet(ctx); err != nil {
				return err
			}
			return e.tenantWide(ctx, rep)
		}},
		{"baseline", func(ctx context.Context, rep *report.Report) error {
			if err := e.sizeFleet(ctx); err != nil {
				return err
			}
			if err := e.lookup(ctx, rep); err != nil {
				return err
			}
			return e.cache(ctx, rep)
		}},
		{"cold", func(ctx context.Context, rep *report.Report) error {
			// The fleet would load every entry published here too; a
			// cold start is one new guard on an otherwise idle machine.
			e.stopFleet(0)
			cold, proxy, err := e.coldStart(ctx, rep)
			if err != nil {
				return err
			}
			defer proxy.Close()
			defer cold.stop()
			return e.catchUp(ctx, rep, cold, proxy)
		}},
		{"check", func(ctx context.Context, rep *report.Report) error {
			return checks(ctx, rep, cfg.CPUs)
		}},
	}
	for _, s := range steps {
		if !cfg.runs(s.name) {
			continue
		}
		e.log.Info("scenario", "name", s.name)
		start := time.Now()
		if err := s.run(ctx, rep); err != nil {
			return rep, err
		}
		e.log.Info("scenario done", "name", s.name, "took", time.Since(start).Round(time.Millisecond))
	}
	rep.Targets = targets(rep, cfg)
	rep.Elapsed = time.Since(rep.Started)
	return rep, nil
}

// sizeFleet makes the fleet cfg.Fleet guards strong; the tenant-wide
// scenario needs the size of the lookup baseline's tenant too.
func (e *env) sizeFleet(ctx context.Context) error {
	if err := e.growFleet(ctx, e.cfg.Fleet); err != nil {
		return err
	}
	e.stopFleet(e.cfg.Fleet)
	return nil
}

func itoa(i int) string { return strconv.Itoa(i) }
