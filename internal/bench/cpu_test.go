package bench

import (
	"context"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/evict-dev/evict/internal/testenv"
)

// TestCPUNowCountsEachParty: work done by this process, by another process
// taken as evictd's, and by a PostgreSQL backend each shows in its own
// part of cpuNow.
func TestCPUNowCountsEachParty(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Fatalf("cpuNow reads /proc; the bench runs on Linux, not %s", runtime.GOOS)
	}
	const work = 300 * time.Millisecond
	// /proc counts CPU time in ticks of 10 ms; a third of the work is the
	// work, not the rounding.
	const least = work / 3
	ctx := context.Background()
	pool := testenv.Pool(t, testenv.Database(t))
	if err := pool.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	child := exec.Command("sh", "-c", "while :; do :; done")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })

	cases := []struct {
		name string
		do   func()
		part func(cpuUse) time.Duration
	}{
		{"bench process", func() {
			for end := time.Now().Add(work); time.Now().Before(end); {
			}
		}, func(c cpuUse) time.Duration { return c.bench }},
		{"evictd process", func() { time.Sleep(work) }, func(c cpuUse) time.Duration { return c.evictd }},
		{"PostgreSQL", func() {
			// Queries for as long as the work lasts.
			for end := time.Now().Add(work); time.Now().Before(end); {
				if _, err := pool.Exec(ctx, "SELECT count(*) FROM generate_series(1, 200000)"); err != nil {
					t.Fatal(err)
				}
			}
		}, func(c cpuUse) time.Duration { return c.postgres }},
	}
	for _, tc := range cases {
		before := cpuNow(child.Process.Pid)
		tc.do()
		used := cpuNow(child.Process.Pid).sub(before)
		if got := tc.part(used); got < least {
			t.Errorf("%s: %v of CPU counted for %v of work (all: %+v)", tc.name, got, work, used)
		}
	}
}

func TestCPUMetrics(t *testing.T) {
	for _, tc := range []struct {
		name  string
		use   cpuUse
		n     int
		span  time.Duration
		names []string
		vals  []float64
	}{
		{"evictd in process", cpuUse{bench: 2 * time.Second, postgres: time.Second}, 1000, 2 * time.Second,
			[]string{"CPU per command: PostgreSQL", "CPU per command: bench process (guards, load, evictd)", "cores these kept busy, of"},
			[]float64{1000, 2000, 1.5}},
		{"evictd in its own process", cpuUse{bench: time.Second, evictd: 500 * time.Millisecond, postgres: 500 * time.Millisecond, ownEvictd: true}, 500, time.Second,
			[]string{"CPU per command: PostgreSQL", "CPU per command: bench process (guards, load)", "CPU per command: evictd process", "cores these kept busy, of"},
			[]float64{1000, 2000, 1000, 2}},
		{"evictd in its own process, under a tick", cpuUse{bench: time.Second, postgres: time.Second, ownEvictd: true}, 1000, time.Second,
			[]string{"CPU per command: PostgreSQL", "CPU per command: bench process (guards, load)", "CPU per command: evictd process", "cores these kept busy, of"},
			[]float64{1000, 1000, 0, 2}},
		{"nothing counted", cpuUse{bench: time.Second}, 0, time.Second, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.use.metrics(tc.n, tc.span)
			if len(m) != len(tc.names) {
				t.Fatalf("%d metrics %+v, want %d", len(m), m, len(tc.names))
			}
			for i := range m {
				if !strings.HasPrefix(m[i].Name, tc.names[i]) || m[i].Value != tc.vals[i] {
					t.Errorf("metric %d: %q = %v, want %q… = %v", i, m[i].Name, m[i].Value, tc.names[i], tc.vals[i])
				}
			}
		})
	}
}
