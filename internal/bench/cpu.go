package bench

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
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
type cpuUse struct {
	bench, evictd, postgres time.Duration
	// ownEvictd is set when evictd runs in a process of its own, counted
	// in evictd; otherwise its time is the bench's.
	ownEvictd bool
}

func (c cpuUse) sub(o cpuUse) cpuUse {
	return cpuUse{bench: c.bench - o.bench, evictd: c.evictd - o.evictd, postgres: c.postgres - o.postgres, ownEvictd: c.ownEvictd}
}

// cpuNow reads the CPU time used so far by the bench process, by the
// evictd process pid (0: none of its own) and by the processes named
// "postgres" (Linux; 0 elsewhere). A process that exits in between takes
// its time with it: the pool keeps its connections through a run.
func cpuNow(evictdPID int) cpuUse {
	c := cpuUse{bench: selfCPU(), postgres: postgresCPU(), ownEvictd: evictdPID != 0}
	if c.ownEvictd {
		c.evictd = procCPU(evictdPID)
	}
	return c
}

// postgresCPU is the CPU time used so far by the processes whose command
// name is postgres.
func postgresCPU() time.Duration {
	dir, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var sum time.Duration
	for _, d := range dir {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if comm, err := os.ReadFile("/proc/" + d.Name() + "/comm"); err == nil && string(comm) == "postgres\n" {
			sum += procCPU(pid)
		}
	}
	return sum
}

// metrics reports c, used while n commands were due over span: per
// command, and as cores kept busy.
func (c cpuUse) metrics(n int, span time.Duration) []report.Metric {
	if n <= 0 || span <= 0 {
		return nil
	}
	per := func(d time.Duration) float64 { return us(d / time.Duration(n)) }
	bench := "CPU per command: bench process (guards, load, evictd)"
	if c.ownEvictd {
		bench = "CPU per command: bench process (guards, load)"
	}
	m := []report.Metric{
		{Name: "CPU per command: PostgreSQL", Value: per(c.postgres), Unit: "µs"},
		{Name: bench, Value: per(c.bench), Unit: "µs"},
	}
	if c.ownEvictd {
		m = append(m, report.Metric{Name: "CPU per command: evictd process", Value: per(c.evictd), Unit: "µs"})
	}
	busy := float64(c.bench+c.evictd+c.postgres) / float64(span)
	return append(m, report.Metric{Name: fmt.Sprintf("cores these kept busy, of %d", runtime.NumCPU()), Value: busy, Unit: "cores"})
}
