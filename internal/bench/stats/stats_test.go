package stats_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/evict-dev/evict/internal/bench/stats"
)

func ms(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value is every percentile", ms(7), 99, 7 * time.Millisecond},
		{"median of an even count is the lower middle", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"median of an odd count is the middle", ms(1, 2, 3), 50, 2 * time.Millisecond},
		{"p99 of 100 values is the 99th", hundred, 99, 99 * time.Millisecond},
		{"p99 of 10 values is the maximum", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"p100 is the maximum", ms(1, 5, 9), 100, 9 * time.Millisecond},
		{"a tiny percentile is the minimum", ms(3, 4, 5), 0.001, 3 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := stats.Percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tc.sorted, tc.p, got, tc.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	lat := ms(9, 1, 5, 3, 7) // unsorted on purpose
	s := stats.Summarize(lat, 2*time.Second)
	want := stats.Summary{N: 5, P50: 5 * time.Millisecond, P99: 9 * time.Millisecond, Max: 9 * time.Millisecond,
		Mean: 5 * time.Millisecond, PerSecond: 2.5}
	if s != want {
		t.Errorf("Summarize = %+v, want %+v", s, want)
	}
	if !slices.IsSorted(lat) {
		t.Errorf("Summarize left %v unsorted", lat)
	}
}

func TestCDF(t *testing.T) {
	t.Parallel()
	sorted := ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	pts := stats.CDF(sorted, 4)
	if len(pts) != 4 {
		t.Fatalf("CDF gave %d points, want 4", len(pts))
	}
	if first, last := pts[0], pts[len(pts)-1]; first.Value != time.Millisecond || last.Value != 10*time.Millisecond || last.Fraction != 1 {
		t.Errorf("CDF ends at %+v and %+v, want the minimum and the maximum at 1", first, last)
	}
	for i := 1; i < len(pts); i++ {
		if pts[i].Value < pts[i-1].Value || pts[i].Fraction <= pts[i-1].Fraction {
			t.Errorf("CDF not increasing at %d: %+v", i, pts)
		}
	}
	if got := stats.CDF(ms(1, 2), 100); len(got) != 2 {
		t.Errorf("CDF of 2 values gave %d points, want 2", len(got))
	}
}

// TestScheduleIsOpenLoop checks that an operation's due time is the
// scheduled one, however long the previous operations take: a slow system
// must not delay the load it is measured with.
func TestScheduleIsOpenLoop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		interval time.Duration
	}{
		{"steady", time.Millisecond},
		{"burst", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := stats.Schedule{Start: time.Now(), Interval: tc.interval, N: 20}
			var mu sync.Mutex
			dues := map[int]time.Time{}
			release := make(chan struct{})
			go func() {
				// Every operation blocks until all have started: with a
				// closed loop the second would never start.
				for {
					mu.Lock()
					n := len(dues)
					mu.Unlock()
					if n == s.N {
						close(release)
						return
					}
					time.Sleep(time.Millisecond)
				}
			}()
			err := s.Run(context.Background(), func(_ context.Context, i int, due time.Time) {
				mu.Lock()
				dues[i] = due
				mu.Unlock()
				<-release
			})
			if err != nil {
				t.Fatal(err)
			}
			for i := range s.N {
				if want := s.Start.Add(time.Duration(i) * tc.interval); !dues[i].Equal(want) {
					t.Errorf("operation %d due at %v, want %v", i, dues[i].Sub(s.Start), want.Sub(s.Start))
				}
			}
		})
	}
}

func TestScheduleStopsWithContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	s := stats.Schedule{Start: time.Now(), Interval: time.Hour, N: 3}
	var ran int
	err := s.Run(ctx, func(context.Context, int, time.Time) {
		ran++
		cancel()
	})
	if err == nil || ran != 1 {
		t.Errorf("Run = %v after %d operations, want context.Canceled after 1", err, ran)
	}
}
