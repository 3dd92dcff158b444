package guard

import (
	"context"
	"sync"
	"sync/atomic"
)

// hold is one live connection (websocket, SSE stream, long poll) of a session.
type hold struct {
	s      Session
	issued int64
	cancel context.CancelCauseFunc
}

type holdKey struct{ tenant, id string }

// holds indexes live connections by session, user and tenant so that a
// revocation finds the connections it ends without scanning them all.
type holds struct {
	n         atomic.Int64
	mu        sync.Mutex
	bySession map[holdKey]map[*hold]struct{}
	byUser    map[holdKey]map[*hold]struct{}
	byTenant  map[string]map[*hold]struct{}
}

func (h *holds) init() {
	h.bySession = map[holdKey]map[*hold]struct{}{}
	h.byUser = map[holdKey]map[*hold]struct{}{}
	h.byTenant = map[string]map[*hold]struct{}{}
}

// Hold registers a live connection of session s. The returned context is
// canceled, with cause ErrSessionRevoked, as soon as the session is revoked
// (at once if it already is); the connection's handler should then close it.
// Call release when the connection ends.
func (g *Guard) Hold(ctx context.Context, s Session) (context.Context, func()) {
	hctx, cancel := context.WithCancelCause(ctx)
	hd := &hold{s: s, issued: s.IssuedAt.UnixNano(), cancel: cancel}
	g.holds.add(hd)
	// Checked after adding: a revocation applied in between is caught by
	// either the index or this check.
	if g.revoked(s.Tenant, s.User, s.ID, hd.issued) {
		cancel(ErrSessionRevoked)
	}
	return hctx, func() {
		g.holds.remove(hd)
		cancel(context.Canceled)
	}
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
	addTo(h.bySession, holdKey{hd.s.Tenant, hd.s.ID}, hd)
	addTo(h.byUser, holdKey{hd.s.Tenant, hd.s.User}, hd)
	addTo(h.byTenant, hd.s.Tenant, hd)
	h.n.Add(1)
}

func (h *holds) remove(hd *hold) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.byTenant[hd.s.Tenant][hd]; !ok {
		return
	}
	removeFrom(h.bySession, holdKey{hd.s.Tenant, hd.s.ID}, hd)
	removeFrom(h.byUser, holdKey{hd.s.Tenant, hd.s.User}, hd)
	removeFrom(h.byTenant, hd.s.Tenant, hd)
	h.n.Add(-1)
}

// revoke cancels the holds a revocation covers. v is the stored value: the
// watermark for tenants and users.
func (h *holds) revoke(kind byte, tenant, id string, v int64) {
	if h.n.Load() == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var set map[*hold]struct{}
	switch kind {
	case kindSession:
		set = h.bySession[holdKey{tenant, id}]
	case kindUser:
		set = h.byUser[holdKey{tenant, id}]
	case kindTenant:
		set = h.byTenant[tenant]
	}
	for hd := range set {
		if kind == kindSession || hd.issued <= v {
			hd.cancel(ErrSessionRevoked)
		}
	}
}
