// Command evict-bench measures evict end to end on this machine: evictd
// in-process with its embedded NATS and a fresh PostgreSQL database, real
// guards, open-loop load. It prints a table and writes report.json,
// report.md and latency.svg to a results folder. `make bench` runs it with
// small sizes; the full run of docs/benchmarks.md is
//
//	make bench-full  # go run ./cmd/evict-bench -bulk-users 100000 -tenant-sessions 1000000 -disconnect 60s -duration 10s -out docs/bench
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/evict-dev/evict/internal/bench"
	"github.com/evict-dev/evict/internal/bench/report"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "evict-bench:", err)
		os.Exit(1)
	}
}

func run() (err error) {
	var cfg bench.Config
	fs := flag.NewFlagSet("evict-bench", flag.ExitOnError)
	fs.Float64Var(&cfg.Rate, "rate", 1000, "steady command rate per second (floor and end to end)")
	fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "length of each steady run, after the warmup")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "operations due in this first stretch of a steady run are not counted")
	fs.IntVar(&cfg.Burst, "burst", 500, "commands due at once in each burst run")
	fs.IntVar(&cfg.Tenants, "tenants", 10, "tenants the logout commands are spread over")
	guards := fs.String("guards", "1,10,50", "guard fleet sizes of the end-to-end runs")
	fs.IntVar(&cfg.Fleet, "fleet", 10, "guards kept for bulk, tenant-wide and the cache baseline (one of -guards)")
	fs.IntVar(&cfg.BulkUsers, "bulk-users", 10_000, "users (3 sessions each) logged out in one bulk command")
	fs.IntVar(&cfg.TenantSessions, "tenant-sessions", 100_000, "sessions of the big tenant (tenant-wide logout, lookup baseline)")
	fs.IntVar(&cfg.TenantLogouts, "tenant-logouts", 30, "tenant-wide logouts per tenant size")
	fs.IntVar(&cfg.ColdEntries, "cold-entries", 1_000_000, "revocation entries a new guard loads at a cold start")
	fs.IntVar(&cfg.ColdRuns, "cold-runs", 3, "cold starts measured")
	cpus := fs.String("cpu", "1,2", "GOMAXPROCS values of the check benchmarks")
	fs.DurationVar(&cfg.Disconnect, "disconnect", 10*time.Second, "how long a guard is cut off before its catch-up")
	fs.Float64Var(&cfg.CatchupRate, "catchup-rate", 200, "command rate per second while the guard is cut off")
	fs.IntVar(&cfg.Lookups, "lookups", 20_000, "PostgreSQL lookups of the per-request baseline")
	fs.DurationVar(&cfg.CacheRefresh, "cache-refresh", 10*time.Second, "refresh period of the cache baseline")
	fs.DurationVar(&cfg.CacheDuration, "cache-duration", 30*time.Second, "how long commands are sent in the cache baseline")
	fs.Float64Var(&cfg.CacheRate, "cache-rate", 100, "command rate per second of the cache baseline")
	only := fs.String("only", "", "comma-separated scenarios to run, of "+strings.Join(bench.Scenarios, ",")+"; default all")
	out := fs.String("out", filepath.Join("bench-results", time.Now().Format("20060102-150405")), "results folder")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (evictd, guards and load) to this file")
	ops := fs.Bool("ops", false, "write every operation of each open-loop run (due, started, answered, done) to <out>/ops/")
	memprofile := fs.String("memprofile", "", "write an allocation profile of the whole run (evictd, guards and load) to this file")
	verbose := fs.Bool("v", false, "log evictd's and the guards' info messages")
	render := fs.String("render", "", "run nothing: render report.md and the plot again from the report.json in this folder")
	_ = fs.Parse(os.Args[1:])
	if *render != "" {
		return rerender(*render)
	}

	if cfg.Guards, err = ints(*guards); err != nil {
		return fmt.Errorf("-guards: %w", err)
	}
	if cfg.CPUs, err = ints(*cpus); err != nil {
		return fmt.Errorf("-cpu: %w", err)
	}
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	cfg.Settings = map[string]string{}
	fs.Visit(func(f *flag.Flag) {
		if f.Name != "out" && f.Name != "cpuprofile" && f.Name != "memprofile" && f.Name != "ops" && f.Name != "v" {
			cfg.Settings[f.Name] = f.Value.String()
		}
	})
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	if *ops {
		cfg.OpsDir = filepath.Join(*out, "ops")
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *memprofile != "" {
		defer func() {
			if werr := writeHeapProfile(*memprofile); werr != nil && err == nil {
				err = werr
			}
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := bench.Run(ctx, cfg)
	if rep != nil {
		if werr := rep.Table(os.Stdout); werr != nil && err == nil {
			err = werr
		}
		if werr := rep.WriteDir(*out); werr != nil && err == nil {
			err = werr
		}
		fmt.Printf("\nresults in %s\n", *out)
	}
	return err
}

// writeHeapProfile writes the heap profile, whose alloc_space and
// alloc_objects samples count every allocation of the run.
func writeHeapProfile(name string) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func rerender(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		return err
	}
	var rep report.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	return rep.WriteDir(dir)
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("want positive integers separated by commas, got %q", s)
		}
		out = append(out, n)
	}
	return out, nil
}
