package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/pkg/guard"
)

// tracker records when every guard of a set refuses each revocation it
// waits for. Guards call it from their OnRevocation hook, which runs on the
// guard's apply goroutine right after the entry is stored: from that moment
// on, Check refuses the session. The hook checks that, then counts.
//
// Revocations are keyed by user id (KindUser; unique across the tenants of
// a tracker), or by operation id
// (KindTenant, whose id is not known before the command returns). The key
// may arrive before the sender registers its due time.
type tracker struct {
	name    string          // for messages
	tenants map[string]bool // the tenants whose revocations count
	want    int             // guards that must refuse
	only    *benchGuard     // when set, the one guard that counts
	issued  time.Time

	// mu guards items, done, changed and each item's times. Guards count
	// under its read lock, with an atomic count per item: with one lock
	// for all, ten guards applying a bulk logout's 100,000 users queued on
	// it, and the hook took 44 % of their apply loops' CPU (0.39 of 0.88 s
	// in a profile), which the enforcement time counted.
	mu      sync.RWMutex
	items   map[string]*item
	order   []*item // the items of expect, in its order
	done    int
	changed chan struct{} // closed and replaced when done grows

	notRefused atomic.Int64 // a hook whose Check still let the session through
	errs       atomic.Int64 // commands the API refused or failed
}

type item struct {
	key         string
	at          int // its index in order, or -1
	due, doneAt time.Time
	count       atomic.Int32
}

// cursor is where a guard expects its next key in a tracker's order.
// Only the guard's apply goroutine uses it.
type cursor struct {
	t    *tracker
	next int
}

// newTracker tracks the revocations of tenants (the floor's counts name
// no tenant).
func newTracker(name string, want int, issued time.Time, tenants ...string) *tracker {
	t := &tracker{name: name, tenants: map[string]bool{}, want: want, issued: issued, items: map[string]*item{}, changed: make(chan struct{})}
	for _, tn := range tenants {
		t.tenants[tn] = true
	}
	return t
}

func (t *tracker) arrive(bg *benchGuard, r events.Revocation) {
	now := time.Now()
	if !t.tenants[r.Tenant] || (t.only != nil && bg != t.only) {
		return
	}
	key := r.ID
	user := r.ID
	if r.Kind == events.KindTenant {
		key, user = r.OperationID, "anyone"
	}
	if !errors.Is(bg.Check(guard.Session{Tenant: r.Tenant, User: user, ID: "bench-session", IssuedAt: t.issued}), guard.ErrSessionRevoked) {
		t.notRefused.Add(1)
		return
	}
	t.countAt(&bg.cursor, key, now)
}

// count records that one more guard (or floor consumer) has key at now.
func (t *tracker) count(key string, now time.Time) {
	t.countAt(nil, key, now)
}

// countAt is count for a guard whose keys arrive mostly in the order
// expect registered them, as a bulk logout's users and a steady run's
// commands do: it looks at the key after the guard's last one before it
// looks in the map. The map's lookups were 0.24 s of the 1.29 s that ten
// guards' apply loops spent on a bulk logout of 100,000 users, each a
// cache miss, which the enforcement time counted (item 45); the next key
// in order is most often in cache already.
func (t *tracker) countAt(c *cursor, key string, now time.Time) {
	t.mu.RLock()
	var it *item
	if c != nil && c.t == t && c.next < len(t.order) && t.order[c.next].key == key {
		it = t.order[c.next]
	} else {
		it = t.items[key]
	}
	if c != nil && it != nil && it.at >= 0 {
		*c = cursor{t: t, next: it.at + 1}
	}
	t.mu.RUnlock()
	if it == nil {
		t.mu.Lock()
		it = t.item(key)
		t.mu.Unlock()
	}
	if int(it.count.Add(1)) != t.want {
		return
	}
	t.mu.Lock()
	it.doneAt = now
	t.done++
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
}

// item returns key's item, added if new; t.mu must be held for writing.
func (t *tracker) item(key string) *item {
	it := t.items[key]
	if it == nil {
		it = &item{key: key, at: -1}
		t.items[key] = it
	}
	return it
}

// expect registers the due time of key's command.
func (t *tracker) expect(key string, due time.Time) {
	t.mu.Lock()
	it := t.item(key)
	it.due = due
	if it.at < 0 {
		it.at = len(t.order)
		t.order = append(t.order, it)
	}
	t.mu.Unlock()
}

// wait returns when n keys are refused by every guard, or fails after timeout.
func (t *tracker) wait(ctx context.Context, n int, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		t.mu.Lock()
		done, ch := t.done, t.changed
		t.mu.Unlock()
		if done >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("%w: %d of %d refused by all %d guards after %s", errIncomplete, done, n, t.want, timeout)
		}
	}
}

// latencies returns, for every key registered with a due time at or after
// from, the time from due to refusal by every guard, and the last refusal.
func (t *tracker) latencies(from time.Time) (lat []time.Duration, last time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, it := range t.items {
		if it.due.IsZero() || it.doneAt.IsZero() || it.due.Before(from) {
			continue
		}
		lat = append(lat, it.doneAt.Sub(it.due))
		if it.doneAt.After(last) {
			last = it.doneAt
		}
	}
	return lat, last
}

// doneSince returns, for every key done, the time from ref to its
// refusal by every guard, and the last refusal.
func (t *tracker) doneSince(ref time.Time) (lat []time.Duration, last time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, it := range t.items {
		if it.doneAt.IsZero() {
			continue
		}
		lat = append(lat, it.doneAt.Sub(ref))
		if it.doneAt.After(last) {
			last = it.doneAt
		}
	}
	return lat, last
}

// problems describes what went wrong, or is "" when nothing did.
func (t *tracker) problems() string {
	var s string
	if n := t.notRefused.Load(); n > 0 {
		s += fmt.Sprintf("%d revocations applied but not refused by Check; ", n)
	}
	if n := t.errs.Load(); n > 0 {
		s += fmt.Sprintf("%d commands failed; ", n)
	}
	return s
}
