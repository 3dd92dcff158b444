package bench

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/evict-dev/evict/internal/testenv"
)

// TestCPUNowCountsEachParty: CPU time used by this process, by another
// process taken as evictd's, and by a PostgreSQL backend each shows in its
// own part of cpuNow, as much as the kernel's scheduler clock
// (/proc/<pid>/schedstat, in nanoseconds) says the work took. Each work
// runs until that clock shows it, so a loaded machine only makes it
// longer.
func TestCPUNowCountsEachParty(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Fatalf("cpuNow reads /proc; the bench runs on Linux, not %s", runtime.GOOS)
	}
	const work = 300 * time.Millisecond
	// /proc/<pid>/stat counts in ticks of 10 ms, rounded down at both
	// reads.
	const slack = 30 * time.Millisecond
	ctx := context.Background()
	pool := testenv.Pool(t, testenv.Database(t))
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}

	child := exec.Command("sh", "-c", "while :; do :; done")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })

	cases := []struct {
		name  string
		clock string // the schedstat of what does the work
		step  func()
		part  func(cpuUse) time.Duration
		exact bool // the part holds nothing but the work
	}{
		{"bench process", "thread-self", func() {
			for end := time.Now().Add(time.Millisecond); time.Now().Before(end); {
			}
		}, func(c cpuUse) time.Duration { return c.bench }, false},
		{"evictd process", strconv.Itoa(child.Process.Pid), func() { time.Sleep(time.Millisecond) },
			func(c cpuUse) time.Duration { return c.evictd }, true},
		{"PostgreSQL", strconv.Itoa(backend), func() {
			if _, err := conn.Exec(ctx, "SELECT count(*) FROM generate_series(1, 100000)"); err != nil {
				t.Fatal(err)
			}
		}, func(c cpuUse) time.Duration { return c.postgres }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The bench's work must stay on the thread whose clock it reads.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			clock := func() time.Duration {
				b, err := os.ReadFile("/proc/" + tc.clock + "/schedstat")
				if err != nil {
					t.Fatal(err)
				}
				ns, err := strconv.ParseInt(strings.Fields(string(b))[0], 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return time.Duration(ns)
			}
			before, from := cpuNow(child.Process.Pid), clock()
			for deadline := time.Now().Add(30 * time.Second); clock()-from < work; {
				if time.Now().After(deadline) {
					t.Fatalf("%v of work not done in 30 s", work)
				}
				tc.step()
			}
			did := clock() - from
			got := tc.part(cpuNow(child.Process.Pid).sub(before))
			if got < did-slack || (tc.exact && got > did+slack) {
				t.Errorf("%v of CPU counted for %v of work", got, did)
			}
		})
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
