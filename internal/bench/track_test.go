package bench

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/evict-dev/evict/internal/bench/stats"
)

// TestTrackerLatencies checks the bookkeeping behind every latency the
// bench reports: a key counts once all guards have it, from its due time,
// whether the guards or the sender come first, and warmup keys are left out.
func TestTrackerLatencies(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tr := newTracker("test", 2, t0)
	tr.expect("warm", at(0))
	tr.count("warm", at(1))
	tr.count("warm", at(2))
	tr.expect("a", at(10))
	tr.count("a", at(11))
	tr.count("a", at(15)) // the second guard: done
	// A tenant-wide logout's operation id is known only when the API
	// answers, possibly after the guards applied it.
	tr.count("op", at(21))
	tr.count("op", at(23))
	tr.expect("op", at(20))
	tr.expect("half", at(30))
	tr.count("half", at(31)) // one guard of two: not done

	if err := tr.wait(context.Background(), 3, time.Second); err != nil {
		t.Fatal(err)
	}
	lat, last := tr.latencies(at(5))
	slices.Sort(lat)
	if want := []time.Duration{3 * time.Millisecond, 5 * time.Millisecond}; !slices.Equal(lat, want) {
		t.Errorf("latencies = %v, want %v", lat, want)
	}
	if !last.Equal(at(23)) {
		t.Errorf("last refusal at %v, want %v", last.Sub(t0), 23*time.Millisecond)
	}
	if err := tr.wait(context.Background(), 4, 10*time.Millisecond); !errors.Is(err, errIncomplete) {
		t.Errorf("wait for a key only one guard has = %v, want errIncomplete", err)
	}
}

// TestTrackerCursor checks that a guard's keys count for the same items
// whether they arrive in the order expect gave them (the cursor's way),
// out of it, before their expect, or at a guard whose cursor is left from
// another tracker.
func TestTrackerCursor(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for _, tc := range []struct {
		name    string
		arrive  []string // at guard one, 1 ms apart from 100 ms; guard two has them all at 50 ms
		pending int      // keys guard one never has
	}{
		{"in order", []string{"a", "b", "c", "d"}, 0},
		{"reversed", []string{"d", "c", "b", "a"}, 0},
		{"skips and returns", []string{"a", "c", "b", "d"}, 0},
		{"one missing", []string{"a", "b", "d"}, 1},
		{"twice", []string{"a", "a", "b", "c", "d"}, 0},
		{"unexpected key first", []string{"late", "a", "b", "c", "d"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys := []string{"a", "b", "c", "d"}
			tr := newTracker("test", 2, t0)
			// Left over from an earlier scenario, with the same keys.
			old := newTracker("old", 2, t0)
			for _, k := range keys {
				old.expect(k, at(0))
			}
			one := cursor{t: old, next: 2}
			for i, k := range keys {
				tr.expect(k, at(i))
				tr.count(k, at(50))
			}
			for i, k := range tc.arrive {
				tr.countAt(&one, k, at(100+i))
			}
			if old.done != 0 {
				t.Errorf("the old tracker counted %d keys", old.done)
			}
			lat, _ := tr.latencies(t0)
			slices.Sort(lat)
			var want []time.Duration // each key done at its first arrival at guard one
			for i, k := range keys {
				j := slices.Index(tc.arrive, k)
				if j < 0 {
					continue
				}
				want = append(want, at(100+j).Sub(at(i)))
			}
			slices.Sort(want)
			if !slices.Equal(lat, want) {
				t.Errorf("latencies = %v, want %v", lat, want)
			}
			if got := len(keys) - tr.done; got != tc.pending {
				t.Errorf("%d keys not done, want %d", got, tc.pending)
			}
		})
	}
}

// TestWriteOps checks the per-operation file of -ops: one line an
// operation in schedule order, times from each one's due time, warm-up
// lines marked, and an operation no guard completed left without a done
// time.
func TestWriteOps(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := &env{cfg: Config{OpsDir: dir}}
	sched := stats.Schedule{Start: time.Now(), N: 3, Interval: 10 * time.Millisecond}
	tr := newTracker("run", 1, sched.Start)
	keys := []string{"a", "b", "c"}
	for i, k := range keys {
		tr.expect(k, sched.Due(i))
	}
	tr.count("a", sched.Due(0).Add(3*time.Millisecond))
	tr.count("b", sched.Due(1).Add(4*time.Millisecond))
	l := load{t: tr, n: 3, key: func(i int) string { return keys[i] }}
	late := []time.Duration{100 * time.Microsecond, 200 * time.Microsecond, 300 * time.Microsecond}
	answered := []time.Duration{time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond}
	if err := e.writeOps(l, sched, sched.Due(1), late, answered); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "01-run.csv"))
	if err != nil {
		t.Fatal(err)
	}
	want := "due_us,counted,late_us,answered_us,done_us\n" +
		"0,false,100,1000,3000\n" +
		"10000,true,200,2000,4000\n" +
		"20000,true,300,3000,\n"
	if string(b) != want {
		t.Errorf("ops file:\n%s\nwant:\n%s", b, want)
	}
}
