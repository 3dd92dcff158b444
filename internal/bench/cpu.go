package bench

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/evict-dev/evict/internal/bench/report"
)

// cpuUse is the CPU time each party of a run used: the bench process (the
// guards, the load, and evictd when it runs in-process), evictd's own
// process when it has one, and PostgreSQL's processes (every backend and
// the server's own, such as the WAL writer). All of them share the
// machine's cores, so their sum over the run's length is how many cores
// the run kept busy: when that nears the cores there are, the tail is a
// queue for them (docs/benchmarks.md, items 32 and 44).
//
// The queue itself is measured too: how long each party's threads were
// ready to run but waited for a core (the scheduler's run delay), and for
// how much of the run at least one task of the machine waited (Linux's
// CPU pressure, "some"). A command's latency is its parties' work plus
// such waits along its path (item 48).
type cpuUse struct {
	bench, evictd, postgres time.Duration
	// The time the same parties' threads waited for a core, and how many
	// times they were put on one.
	benchWait, evictdWait, postgresWait time.Duration
	benchRuns, evictdRuns, postgresRuns int64
	// pressure is the time at least one task of the machine waited for a
	// core; pressured says the kernel reports it.
	pressure  time.Duration
	pressured bool
	// ownEvictd is set when evictd runs in a process of its own, counted
	// in evictd; otherwise its time is the bench's.
	ownEvictd bool
}

func (c cpuUse) sub(o cpuUse) cpuUse {
	return cpuUse{
		bench: c.bench - o.bench, evictd: c.evictd - o.evictd, postgres: c.postgres - o.postgres,
		benchWait: c.benchWait - o.benchWait, evictdWait: c.evictdWait - o.evictdWait, postgresWait: c.postgresWait - o.postgresWait,
		benchRuns: c.benchRuns - o.benchRuns, evictdRuns: c.evictdRuns - o.evictdRuns, postgresRuns: c.postgresRuns - o.postgresRuns,
		pressure: c.pressure - o.pressure, pressured: c.pressured && o.pressured,
		ownEvictd: c.ownEvictd,
	}
}

// cpuNow reads the CPU time used so far by the bench process, by the
// evictd process pid (0: none of its own) and by the processes named
// "postgres", with the time each waited for a core, and the machine's CPU
// pressure (Linux; 0 elsewhere). A process or thread that exits in
// between takes its time with it: the pool keeps its connections through a
// run, and Go keeps its threads.
func cpuNow(evictdPID int) cpuUse {
	c := cpuUse{bench: selfCPU(), ownEvictd: evictdPID != 0}
	c.benchWait, c.benchRuns = procSched(os.Getpid())
	c.postgres, c.postgresWait, c.postgresRuns = postgresCPU()
	if c.ownEvictd {
		c.evictd = procCPU(evictdPID)
		c.evictdWait, c.evictdRuns = procSched(evictdPID)
	}
	c.pressure, c.pressured = cpuPressure()
	return c
}

// postgresCPU is the CPU time used so far by the processes whose command
// name is postgres, the time they waited for a core and how many times
// they were put on one.
func postgresCPU() (cpu, wait time.Duration, runs int64) {
	dir, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0, 0
	}
	for _, d := range dir {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if comm, err := os.ReadFile("/proc/" + d.Name() + "/comm"); err == nil && string(comm) == "postgres\n" {
			w, r := procSched(pid)
			cpu, wait, runs = cpu+procCPU(pid), wait+w, runs+r
		}
	}
	return cpu, wait, runs
}

// procSched is the time the threads of process pid have spent ready to run
// but waiting for a core, and how many times they were put on one: the
// second and third fields of each thread's schedstat (nanoseconds, a
// count). A thread that blocks and is woken is put on a core again, so
// runs count the hand-overs between threads and processes that carry a
// command, each of which may wait.
func procSched(pid int) (wait time.Duration, runs int64) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0
	}
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if err != nil {
			continue // the thread exited
		}
		if f := strings.Fields(string(b)); len(f) >= 3 {
			ns, _ := strconv.ParseInt(f[1], 10, 64)
			n, _ := strconv.ParseInt(f[2], 10, 64)
			wait, runs = wait+time.Duration(ns), runs+n
		}
	}
	return wait, runs
}

// cpuPressure is the time, since boot, during which at least one task of
// the machine was ready to run but waited for a core: the "some" total of
// /proc/pressure/cpu, in microseconds. ok is false where the kernel does
// not report it.
func cpuPressure() (d time.Duration, ok bool) {
	b, err := os.ReadFile("/proc/pressure/cpu")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	if !strings.HasPrefix(line, "some ") {
		return 0, false
	}
	for _, f := range strings.Fields(line) {
		if v, found := strings.CutPrefix(f, "total="); found {
			us, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, false
			}
			return time.Duration(us) * time.Microsecond, true
		}
	}
	return 0, false
}

// metrics reports c, used while n commands were due over span: per
// command, and as cores kept busy.
func (c cpuUse) metrics(n int, span time.Duration) []report.Metric {
	if n <= 0 || span <= 0 {
		return nil
	}
	per := func(d time.Duration) float64 { return us(d / time.Duration(n)) }
	bench := "bench process (guards, load, evictd)"
	if c.ownEvictd {
		bench = "bench process (guards, load)"
	}
	m := []report.Metric{
		{Name: "CPU per command: PostgreSQL", Value: per(c.postgres), Unit: "µs"},
		{Name: "CPU per command: " + bench, Value: per(c.bench), Unit: "µs"},
	}
	if c.ownEvictd {
		m = append(m, report.Metric{Name: "CPU per command: evictd process", Value: per(c.evictd), Unit: "µs"})
	}
	busy := float64(c.bench+c.evictd+c.postgres) / float64(span)
	m = append(m, report.Metric{Name: fmt.Sprintf("cores these kept busy, of %d", runtime.NumCPU()), Value: busy, Unit: "cores"},
		report.Metric{Name: "waited for a core per command: PostgreSQL", Value: per(c.postgresWait), Unit: "µs"},
		report.Metric{Name: "waited for a core per command: " + bench, Value: per(c.benchWait), Unit: "µs"})
	if c.ownEvictd {
		m = append(m, report.Metric{Name: "waited for a core per command: evictd process", Value: per(c.evictdWait), Unit: "µs"})
	}
	runs := func(r int64) float64 { return float64(r) / float64(n) }
	m = append(m, report.Metric{Name: "put on a core per command: PostgreSQL", Value: runs(c.postgresRuns), Unit: "times"},
		report.Metric{Name: "put on a core per command: " + bench, Value: runs(c.benchRuns), Unit: "times"})
	if c.ownEvictd {
		m = append(m, report.Metric{Name: "put on a core per command: evictd process", Value: runs(c.evictdRuns), Unit: "times"})
	}
	if c.pressured {
		m = append(m, report.Metric{Name: "share of the run some task waited for a core", Value: 100 * float64(c.pressure) / float64(span), Unit: "%"})
	}
	return m
}
