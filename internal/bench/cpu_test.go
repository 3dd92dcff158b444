package bench

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

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
	conn, backend := backendConn(t)

	child := spin(t)

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

// TestCPUNowCountsWaits: on a machine with more busy processes than
// cores, each waits for a core in turn. A process that is always ready to
// run is either running or waiting, so its CPU time and its wait add up to
// the time it ran for; the wait of the bench process holds that of its own
// threads, PostgreSQL's that of a busy backend; and some task waited for
// most of the time.
func TestCPUNowCountsWaits(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Fatalf("cpuNow reads /proc; the bench runs on Linux, not %s", runtime.GOOS)
	}
	if _, ok := cpuPressure(); !ok {
		t.Fatal("/proc/pressure/cpu is not readable: the kernel must report CPU pressure (CONFIG_PSI)")
	}
	const span = 500 * time.Millisecond
	// /proc/<pid>/stat counts CPU in ticks of 10 ms, rounded down at both
	// reads; the children start and stop between the reads.
	const slack = 50 * time.Millisecond
	ctx := context.Background()
	conn, backend := backendConn(t)

	// One more busy process than cores, besides this test's thread and
	// the backend: every core has a queue.
	evictd := spin(t).Process.Pid
	for range runtime.NumCPU() {
		spin(t)
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// Each task's own clock, /proc/<task>/schedstat, read inside the two
	// reads of cpuNow, and for evictd outside them too: a counter read
	// inside counts no more than cpuNow does, one read outside no less.
	evictdTask, selfTask, backendTask := strconv.Itoa(evictd), "thread-self", strconv.Itoa(backend)
	evictdOuter, evictdRunsOuter := schedWait(t, evictdTask)
	before, from := cpuNow(evictd), time.Now()
	evictdFrom, evictdRunsFrom := schedWait(t, evictdTask)
	selfFrom, selfRunsFrom := schedWait(t, selfTask)
	backendFrom, backendRunsFrom := schedWait(t, backendTask)
	busy := make(chan error, 1)
	var queries atomic.Int64
	go func() {
		var err error
		for time.Since(from) < span && err == nil {
			_, err = conn.Exec(ctx, "SELECT count(*) FROM generate_series(1, 20000)")
			queries.Add(1)
		}
		busy <- err
	}()
	for time.Since(from) < span {
	}
	selfTo, selfRunsTo := schedWait(t, selfTask)
	if err := <-busy; err != nil {
		t.Fatal(err)
	}
	backendTo, backendRunsTo := schedWait(t, backendTask)
	evictdTo, evictdRunsTo := schedWait(t, evictdTask)
	got, took := cpuNow(evictd).sub(before), time.Since(from)
	evictdOuterTo, evictdRunsOuterTo := schedWait(t, evictdTask)

	if ran := got.evictd + got.evictdWait; ran < took-slack || ran > took+slack {
		t.Errorf("an always-ready process: %v of CPU and %v of waiting, over %v", got.evictd, got.evictdWait, took)
	}
	if got.evictdWait <= 0 || got.evictdRuns <= 0 {
		t.Errorf("a process among more busy ones than cores waited %v, put on a core %d times", got.evictdWait, got.evictdRuns)
	}
	if in, out := evictdTo-evictdFrom, evictdOuterTo-evictdOuter; got.evictdWait < in || got.evictdWait > out {
		t.Errorf("a process waited %v, by its own clock between %v and %v", got.evictdWait, in, out)
	}
	if in, out := evictdRunsTo-evictdRunsFrom, evictdRunsOuterTo-evictdRunsOuter; got.evictdRuns < in || got.evictdRuns > out {
		t.Errorf("a process was put on a core %d times, by its own count between %d and %d", got.evictdRuns, in, out)
	}
	if own := selfTo - selfFrom; got.benchWait < own || own <= 0 {
		t.Errorf("the bench process waited %v, its busy thread alone %v", got.benchWait, own)
	}
	if own := selfRunsTo - selfRunsFrom; got.benchRuns < own || own <= 0 {
		t.Errorf("the bench process was put on a core %d times, its busy thread alone %d", got.benchRuns, own)
	}
	if own := backendTo - backendFrom; got.postgresWait < own || own <= 0 {
		t.Errorf("PostgreSQL waited %v, its busy backend alone %v", got.postgresWait, own)
	}
	// The backend blocks on its socket between queries, and each query
	// wakes it.
	if own := backendRunsTo - backendRunsFrom; got.postgresRuns < own || own < queries.Load() {
		t.Errorf("PostgreSQL was put on a core %d times, its backend %d times for %d queries", got.postgresRuns, own, queries.Load())
	}
	if !got.pressured || got.pressure < took/2 || got.pressure > took+slack {
		t.Errorf("some task waited %v (reported: %t) of %v", got.pressure, got.pressured, took)
	}
}

// backendConn is a connection to a PostgreSQL backend of its own, and the
// backend's pid.
func backendConn(t *testing.T) (*pgxpool.Conn, int) {
	t.Helper()
	ctx := context.Background()
	conn, err := testenv.Pool(t, testenv.Database(t)).Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Release)
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}
	return conn, backend
}

// spin starts a process that is always ready to run, until the test ends.
func spin(t *testing.T) *exec.Cmd {
	t.Helper()
	c := exec.Command("sh", "-c", "while :; do :; done")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
	return c
}

// schedWait is the wait for a core and the times put on one of
// /proc/<task>/schedstat.
func schedWait(t *testing.T, task string) (time.Duration, int64) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + task + "/schedstat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	ns, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	runs, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return time.Duration(ns), runs
}

func TestCPUMetrics(t *testing.T) {
	const (
		pgCPU, pgWait, pgRuns = "CPU per command: PostgreSQL", "waited for a core per command: PostgreSQL", "put on a core per command: PostgreSQL"
		inCPU, inWait, inRuns = "CPU per command: bench process (guards, load, evictd)", "waited for a core per command: bench process (guards, load, evictd)",
			"put on a core per command: bench process (guards, load, evictd)"
		ownCPU, ownWait, ownRuns = "CPU per command: bench process (guards, load)", "waited for a core per command: bench process (guards, load)",
			"put on a core per command: bench process (guards, load)"
		dCPU, dWait, dRuns = "CPU per command: evictd process", "waited for a core per command: evictd process", "put on a core per command: evictd process"
		busy, share        = "cores these kept busy, of", "share of the run some task waited for a core"
	)
	for _, tc := range []struct {
		name  string
		use   cpuUse
		n     int
		span  time.Duration
		names []string
		vals  []float64
	}{
		{"evictd in process", cpuUse{bench: 2 * time.Second, postgres: time.Second, benchWait: time.Second, postgresWait: 500 * time.Millisecond,
			benchRuns: 30000, postgresRuns: 9000, pressure: time.Second, pressured: true}, 1000, 2 * time.Second,
			[]string{pgCPU, inCPU, busy, pgWait, inWait, pgRuns, inRuns, share},
			[]float64{1000, 2000, 1.5, 500, 1000, 9, 30, 50}},
		{"evictd in its own process", cpuUse{bench: time.Second, evictd: 500 * time.Millisecond, postgres: 500 * time.Millisecond, ownEvictd: true,
			evictdWait: 100 * time.Millisecond, evictdRuns: 10000, pressure: 250 * time.Millisecond, pressured: true}, 500, time.Second,
			[]string{pgCPU, ownCPU, dCPU, busy, pgWait, ownWait, dWait, pgRuns, ownRuns, dRuns, share},
			[]float64{1000, 2000, 1000, 2, 0, 0, 200, 0, 0, 20, 25}},
		{"evictd in its own process, under a tick, no CPU pressure reported", cpuUse{bench: time.Second, postgres: time.Second, ownEvictd: true}, 1000, time.Second,
			[]string{pgCPU, ownCPU, dCPU, busy, pgWait, ownWait, dWait, pgRuns, ownRuns, dRuns},
			[]float64{1000, 1000, 0, 2, 0, 0, 0, 0, 0, 0}},
		{"nothing counted", cpuUse{bench: time.Second}, 0, time.Second, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.use.metrics(tc.n, tc.span)
			if len(m) != len(tc.names) {
				t.Fatalf("%d metrics %+v, want %d", len(m), m, len(tc.names))
			}
			for i := range m {
				if !strings.HasPrefix(m[i].Name, tc.names[i]) || (tc.names[i] != busy && m[i].Name != tc.names[i]) || m[i].Value != tc.vals[i] {
					t.Errorf("metric %d: %q = %v, want %q… = %v", i, m[i].Name, m[i].Value, tc.names[i], tc.vals[i])
				}
			}
		})
	}
}
