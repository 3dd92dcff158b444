// Command evict-bench measures evict end to end on this machine: evictd
// with its embedded NATS (in-process, or in a process of its own with
// -evictd process) and a fresh PostgreSQL database, real guards,
// open-loop load. It prints a table and writes report.json,
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
	"strconv"
	"strings"
	"time"

	"github.com/evict-dev/evict/internal/bench"
	"github.com/evict-dev/evict/internal/bench/report"
)

func main() {
	if os.Getenv(bench.ChildEnv) != "" {
		if err := bench.ServeDaemon(); err != nil {
			fmt.Fprintln(os.Stderr, "evict-bench: evictd:", err)
			os.Exit(1)
		}
		return
	}
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
	fs.IntVar(&cfg.TenantLogouts, "tenant-logouts", 200, "tenant-wide logouts per tenant size, 10 a second (below 100, their p99 is the slowest)")
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
	fs.StringVar(&cfg.Evictd, "evictd", bench.EvictdInProcess, "where evictd runs: "+bench.EvictdInProcess+" (the bench's process) or "+bench.EvictdProcess+" (one of its own, as deployed)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the bench (guards and load; evictd too if -evictd "+bench.EvictdInProcess+") to this file, and of evictd's process to <file>.evictd")
	ops := fs.Bool("ops", false, "write every operation of each open-loop run (due, started, answered, done) to <out>/ops/")
	memprofile := fs.String("memprofile", "", "write an allocation profile of the bench to this file, and of evictd's process to <file>.evictd (as -cpuprofile)")
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
	// Where evictd runs changes every figure: the report always says.
	cfg.Settings["evictd"] = cfg.Evictd
	cfg.LogLevel = slog.LevelWarn
	if *verbose {
		cfg.LogLevel = slog.LevelInfo
	}
	if *ops {
		cfg.OpsDir = filepath.Join(*out, "ops")
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))

	if *cpuprofile != "" {
		stopProfile, err := bench.StartCPUProfile(*cpuprofile)
		if err != nil {
			return err
		}
		defer stopProfile()
		if cfg.Evictd == bench.EvictdProcess {
			cfg.EvictdCPUProfile = *cpuprofile + ".evictd"
		}
	}
	if *memprofile != "" {
		if cfg.Evictd == bench.EvictdProcess {
			cfg.EvictdMemProfile = *memprofile + ".evictd"
		}
		defer func() {
			if werr := bench.WriteAllocs(*memprofile); werr != nil && err == nil {
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
