package guard

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/evict-dev/evict/events"
)

// hold is one live connection (websocket, SSE stream, long poll) of a
// session, or the marker of a session's in-flight work (cancel == nil).
type hold struct {
	s      Session
	issued int64
	cancel context.CancelCauseFunc
}

type holdKey struct{ tenant, id string }

// busyState is the in-flight work of one session.
type busyState struct {
	marker   *hold
	inFlight int
	revoked  bool // a revocation arrived: the session is deferred
	opID     string
	timer    *time.Timer
}

// holds indexes live connections and in-flight work by session, user and
// tenant, so that a revocation finds what it ends without scanning.
type holds struct {
	n         atomic.Int64
	mu        sync.Mutex
	bySession map[holdKey]map[*hold]struct{}
	byUser    map[holdKey]map[*hold]struct{}
	byTenant  map[string]map[*hold]struct{}
	busy      map[holdKey]*busyState
}

func (h *holds) init() {
	h.bySession = map[holdKey]map[*hold]struct{}{}
	h.byUser = map[holdKey]map[*hold]struct{}{}
	h.byTenant = map[string]map[*hold]struct{}{}
	h.busy = map[holdKey]*busyState{}
}

// Hold registers a live connection of session s. The returned context is
// canceled, with cause ErrSessionRevoked, as soon as the session is revoked
// (at once if it already is), unless the session has in-flight work (see
// Busy): then it ends when that work does. The connection's handler should
// close the connection when the context ends. Call release when the
// connection ends.
func (g *Guard) Hold(ctx context.Context, s Session) (context.Context, func()) {
	hctx, cancel := context.WithCancelCause(ctx)
	hd := &hold{s: s, issued: s.IssuedAt.UnixNano(), cancel: cancel}
	g.holds.add(hd)
	// Checked after adding: a revocation applied in between is caught by
	// either the index or this check.
	if g.revoked(s.Tenant, s.User, s.ID, hd.issued) && !g.holds.isBusy(s) {
		cancel(ErrSessionRevoked)
	}
	return hctx, func() {
		g.holds.remove(hd)
		cancel(context.Canceled)
	}
}

// Busy marks in-flight work of session s that must not be cut, such as a
// phone call in progress or an upload. Call it after the session passed
// Check, and call done when the work ends.
//
// If the session is revoked meanwhile, Check refuses its new requests at
// once, but its live connections (Hold) stay open while work is in flight,
// and the guard reports the session "deferred" to evict. When the last
// in-flight work of the session ends, or Config.DrainTimeout passes, the
// guard ends the connections and reports "terminated".
func (g *Guard) Busy(s Session) (done func()) {
	key := holdKey{s.Tenant, s.ID}
	h := &g.holds
	h.mu.Lock()
	b := h.busy[key]
	if b == nil {
		b = &busyState{marker: &hold{s: s, issued: s.IssuedAt.UnixNano()}}
		h.busy[key] = b
		h.addLocked(b.marker)
	}
	b.inFlight++
	h.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() { g.endWork(key, b, false) })
	}
}

// endWork ends one piece of in-flight work, or all of it when the drain
// deadline passed (timedOut).
func (g *Guard) endWork(key holdKey, b *busyState, timedOut bool) {
	h := &g.holds
	h.mu.Lock()
	if h.busy[key] != b { // already terminated by the deadline
		h.mu.Unlock()
		return
	}
	if timedOut {
		b.inFlight = 0
	} else {
		b.inFlight--
	}
	if b.inFlight > 0 {
		h.mu.Unlock()
		return
	}
	delete(h.busy, key)
	h.removeLocked(b.marker)
	var toCancel []*hold
	if b.revoked {
		if b.timer != nil {
			b.timer.Stop()
		}
		for hd := range h.bySession[key] {
			if hd.cancel != nil {
				toCancel = append(toCancel, hd)
			}
		}
	}
	h.mu.Unlock()
	for _, hd := range toCancel {
		hd.cancel(ErrSessionRevoked)
	}
	if b.revoked {
		g.reportTermination(b.marker.s, events.TerminationTerminated, 0, b.opID, timedOut)
	}
}

func (h *holds) isBusy(s Session) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.busy[holdKey{s.Tenant, s.ID}]
	return b != nil && b.inFlight > 0
}

func addTo[K comparable](m map[K]map[*hold]struct{}, k K, hd *hold) {
	set := m[k]
	if set == nil {
		set = map[*hold]struct{}{}
		m[k] = set
	}
	set[hd] = struct{}{}
}

func removeFrom[K comparable](m map[K]map[*hold]struct{}, k K, hd *hold) {
	if set := m[k]; set != nil {
		delete(set, hd)
		if len(set) == 0 {
			delete(m, k)
		}
	}
}

func (h *holds) add(hd *hold) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.addLocked(hd)
}

func (h *holds) addLocked(hd *hold) {
	addTo(h.bySession, holdKey{hd.s.Tenant, hd.s.ID}, hd)
	addTo(h.byUser, holdKey{hd.s.Tenant, hd.s.User}, hd)
	addTo(h.byTenant, hd.s.Tenant, hd)
	h.n.Add(1)
}

func (h *holds) remove(hd *hold) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(hd)
}

func (h *holds) removeLocked(hd *hold) {
	if _, ok := h.byTenant[hd.s.Tenant][hd]; !ok {
		return
	}
	removeFrom(h.bySession, holdKey{hd.s.Tenant, hd.s.ID}, hd)
	removeFrom(h.byUser, holdKey{hd.s.Tenant, hd.s.User}, hd)
	removeFrom(h.byTenant, hd.s.Tenant, hd)
	h.n.Add(-1)
}

// revoke ends the live connections a revocation covers and defers the
// sessions with in-flight work. v is the stored value: the watermark for
// tenants and users. It runs on the apply goroutine.
func (h *holds) revoke(g *Guard, kind byte, tenant, id string, v int64, opID string) {
	if h.n.Load() == 0 {
		return
	}
	h.mu.Lock()
	var set map[*hold]struct{}
	switch kind {
	case kindSession:
		set = h.bySession[holdKey{tenant, id}]
	case kindUser:
		set = h.byUser[holdKey{tenant, id}]
	case kindTenant:
		set = h.byTenant[tenant]
	}
	var toCancel []*hold
	var deferred []*busyState
	for hd := range set {
		if kind != kindSession && hd.issued > v {
			continue
		}
		key := holdKey{hd.s.Tenant, hd.s.ID}
		if b := h.busy[key]; b != nil && b.inFlight > 0 {
			if !b.revoked {
				b.revoked, b.opID = true, opID
				b.timer = time.AfterFunc(g.cfg.DrainTimeout, func() { g.endWork(key, b, true) })
				deferred = append(deferred, b)
			}
			continue
		}
		if hd.cancel != nil {
			toCancel = append(toCancel, hd)
		}
	}
	inFlight := make([]int, len(deferred))
	for i, b := range deferred {
		inFlight[i] = b.inFlight
	}
	h.mu.Unlock()
	for _, hd := range toCancel {
		hd.cancel(ErrSessionRevoked)
	}
	for i, b := range deferred {
		g.reportTermination(b.marker.s, events.TerminationDeferred, inFlight[i], b.opID, false)
	}
}
