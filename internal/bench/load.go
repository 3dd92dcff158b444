package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/evict-dev/evict/internal/bench/stats"
)

// load is one open-loop run: n operations at rate per second (0: all at
// once, a burst), each registered with tracker t under key(i) before send
// does it. Latency counts from each operation's due time to the moment t
// saw it complete.
type load struct {
	t    *tracker
	n    int
	rate float64
	// warmup operations are sent but not counted: connections, caches and
	// the JIT of the database's plans settle first.
	warmup time.Duration
	key    func(i int) string
	send   func(ctx context.Context, i int, due time.Time) error
	// sent, when set, is called once every send has returned, before the
	// wait for completion.
	sent func()
}

// result is what a load measured; lat is sorted. late is how long after
// its due time each counted operation started, answered how long after
// its due time send returned: for a command, the API's answer.
type result struct {
	sum            stats.Summary
	lat            []time.Duration
	start          time.Time
	t              *tracker
	late, answered stats.Summary
	// cpu is the CPU time the parties used over cpuFor, while the cpuOps
	// counted commands of a steady run were due (zero for a burst).
	cpu    cpuUse
	cpuOps int
	cpuFor time.Duration
}

func (e *env) run(ctx context.Context, l load) (result, error) {
	e.track.Store(l.t)
	defer e.track.Store(nil)
	sched := stats.Schedule{Start: time.Now().Add(20 * time.Millisecond), N: l.n}
	if l.rate > 0 {
		sched.Interval = time.Duration(float64(time.Second) / l.rate)
	}
	var once sync.Once
	// The CPU the parties used is read when the first counted command of
	// a steady run is due, and again once the last was sent.
	var cpuFrom cpuUse
	var cpuAt time.Time
	cpuRead := make(chan struct{})
	var cpuTimer *time.Timer
	if l.rate > 0 {
		cpuTimer = time.AfterFunc(time.Until(sched.Start.Add(l.warmup)), func() {
			cpuFrom, cpuAt = cpuNow(e.d.pid), time.Now()
			close(cpuRead)
		})
	}
	// Each operation writes its own element, and Run returns after all.
	late, answered := make([]time.Duration, l.n), make([]time.Duration, l.n)
	err := sched.Run(ctx, func(ctx context.Context, i int, due time.Time) {
		l.t.expect(l.key(i), due)
		late[i] = time.Since(due)
		if err := l.send(ctx, i, due); err != nil {
			l.t.errs.Add(1)
			once.Do(func() { e.log.Error("operation failed", "tenant", l.t.name, "err", err) })
		}
		answered[i] = time.Since(due)
	})
	var cpu cpuUse
	var cpuFor time.Duration
	// A timer that had not fired stops: the run ended in its warm-up.
	if cpuTimer != nil && !cpuTimer.Stop() {
		<-cpuRead
		cpu, cpuFor = cpuNow(e.d.pid).sub(cpuFrom), time.Since(cpuAt)
	}
	if err != nil {
		return result{}, err
	}
	if l.sent != nil {
		l.sent()
	}
	timeout := time.Minute + time.Duration(l.n)*time.Millisecond
	if err := l.t.wait(ctx, l.n-int(l.t.errs.Load()), timeout); err != nil {
		return result{}, err
	}
	if p := l.t.problems(); p != "" {
		return result{}, fmt.Errorf("bench: %s: %s", l.t.name, p)
	}
	from := sched.Start.Add(l.warmup)
	if e.cfg.OpsDir != "" {
		if err := e.writeOps(l, sched, from, late, answered); err != nil {
			return result{}, err
		}
	}
	lat, last := l.t.latencies(from)
	first, k := from, 0
	if l.rate > 0 {
		// The first counted operation is due at the first multiple of the
		// interval at or after from.
		k = int((from.Sub(sched.Start) + sched.Interval - 1) / sched.Interval)
		first = sched.Due(k)
	}
	return result{sum: stats.Summarize(lat, last.Sub(first)), lat: lat, start: sched.Start, t: l.t,
		late: stats.Summarize(late[k:], 0), answered: stats.Summarize(answered[k:], 0),
		cpu: cpu, cpuOps: l.n - k, cpuFor: cpuFor}, nil
}

// writeOps writes one line per operation of a run to OpsDir, in a file
// named for the run: when it was due after the run's start, whether it
// counted (not warm-up), how late it started, when send returned (for a
// command, the API's answer) and when it completed, all from its due time
// in microseconds; done is empty for an operation that did not complete.
// A tail is easier to explain with the operations in order: whether the
// slow ones come together, and at which step.
func (e *env) writeOps(l load, sched stats.Schedule, from time.Time, late, answered []time.Duration) error {
	e.runs++
	name := filepath.Join(e.cfg.OpsDir, fmt.Sprintf("%02d-%s.csv", e.runs, l.t.name))
	var b strings.Builder
	b.WriteString("due_us,counted,late_us,answered_us,done_us\n")
	l.t.mu.Lock()
	for i := range l.n {
		due := sched.Due(i)
		done := ""
		if it := l.t.items[l.key(i)]; it != nil && !it.doneAt.IsZero() {
			done = strconv.FormatInt(it.doneAt.Sub(due).Microseconds(), 10)
		}
		fmt.Fprintf(&b, "%d,%t,%d,%d,%s\n", due.Sub(sched.Start).Microseconds(), !due.Before(from),
			late[i].Microseconds(), answered[i].Microseconds(), done)
	}
	l.t.mu.Unlock()
	if err := os.MkdirAll(e.cfg.OpsDir, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := os.WriteFile(name, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}
