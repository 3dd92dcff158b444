package bench

import (
	"context"
	"fmt"
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
}

func (e *env) run(ctx context.Context, l load) (result, error) {
	e.track.Store(l.t)
	defer e.track.Store(nil)
	sched := stats.Schedule{Start: time.Now().Add(20 * time.Millisecond), N: l.n}
	if l.rate > 0 {
		sched.Interval = time.Duration(float64(time.Second) / l.rate)
	}
	var once sync.Once
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
	lat, last := l.t.latencies(from)
	first, k := from, 0
	if l.rate > 0 {
		// The first counted operation is due at the first multiple of the
		// interval at or after from.
		k = int((from.Sub(sched.Start) + sched.Interval - 1) / sched.Interval)
		first = sched.Due(k)
	}
	return result{sum: stats.Summarize(lat, last.Sub(first)), lat: lat, start: sched.Start, t: l.t,
		late: stats.Summarize(late[k:], 0), answered: stats.Summarize(answered[k:], 0)}, nil
}
