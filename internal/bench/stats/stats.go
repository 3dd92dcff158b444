// Package stats summarizes the latencies evict-bench measures and drives
// its open-loop load: operations are due at fixed times from a start, and a
// latency counts from the time an operation was due, not from when it was
// sent, so a slow system cannot hide its queueing (no coordinated omission).
package stats

import (
	"context"
	"math"
	"slices"
	"sync"
	"time"
)

// Summary describes a set of latencies. Durations are in nanoseconds in
// JSON (Go's encoding of time.Duration).
type Summary struct {
	N    int           `json:"n"`
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
	Max  time.Duration `json:"max_ns"`
	Mean time.Duration `json:"mean_ns"`
	// PerSecond is the throughput: operations completed per second of the
	// measured span (0 when the caller has no span to give).
	PerSecond float64 `json:"per_second"`
}

// Summarize sorts lat in place and summarizes it. span, when positive, is
// the wall time the operations took, for PerSecond.
func Summarize(lat []time.Duration, span time.Duration) Summary {
	if len(lat) == 0 {
		return Summary{}
	}
	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	s := Summary{
		N:    len(lat),
		P50:  Percentile(lat, 50),
		P99:  Percentile(lat, 99),
		Max:  lat[len(lat)-1],
		Mean: sum / time.Duration(len(lat)),
	}
	if span > 0 {
		s.PerSecond = float64(len(lat)) / span.Seconds()
	}
	return s
}

// Percentile is the nearest-rank p-th percentile of sorted (0 < p <= 100):
// the smallest value that at least p % of the values do not exceed. It is
// always one of the measured values, never an interpolation.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// Point is one step of an empirical distribution: Fraction of the values
// are <= Value.
type Point struct {
	Value    time.Duration `json:"value_ns"`
	Fraction float64       `json:"fraction"`
}

// CDF returns at most n points of the empirical distribution of sorted,
// evenly spaced in rank, always including the minimum and the maximum.
func CDF(sorted []time.Duration, n int) []Point {
	if len(sorted) == 0 || n < 2 {
		return nil
	}
	n = min(n, len(sorted))
	pts := make([]Point, 0, n)
	for k := range n {
		i := k * (len(sorted) - 1) / (n - 1)
		pts = append(pts, Point{Value: sorted[i], Fraction: float64(i+1) / float64(len(sorted))})
	}
	return pts
}

// Schedule is an open-loop arrival schedule: operation i is due at
// Start + i*Interval. An Interval of 0 makes every operation due at Start
// (a burst).
type Schedule struct {
	Start    time.Time
	Interval time.Duration
	N        int
}

// Due is when operation i is due.
func (s Schedule) Due(i int) time.Time {
	return s.Start.Add(time.Duration(i) * s.Interval)
}

// Run calls op(ctx, i, due) for every operation, each on its own goroutine
// started at its due time, and returns when all have returned. It never
// waits for one operation before starting the next: an operation that is
// late to start (the process was descheduled) starts at once, and its due
// time still is the scheduled one. It stops starting new operations when
// ctx ends and returns ctx's error then.
//
// Run paces on an OS thread of its own (see sleepUntil): Go's timers wake
// a runtime that has nothing else to do at the next millisecond, and
// operations due every 10 ms started 0.6 ms late at the median and 1.1 ms
// at p90, which the bench counted against what it measured.
func (s Schedule) Run(ctx context.Context, op func(ctx context.Context, i int, due time.Time)) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	unlock := lockThread()
	defer unlock()
	for i := range s.N {
		due := s.Due(i)
		if err := sleepUntil(ctx, due); err != nil {
			return err
		}
		wg.Go(func() { op(ctx, i, due) })
	}
	return nil
}
