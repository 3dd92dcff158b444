package bench

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
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
