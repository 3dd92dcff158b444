package guard

import (
	"hash/maphash"
	"sync"

	"github.com/evict-dev/evict/events"
)

// seenShards spreads Seen over independent locks so that concurrent
// requests rarely meet on one.
const seenShards = 64

// seenSet collects the sessions that made requests since the last report.
type seenSet struct {
	seed   maphash.Seed
	shards [seenShards]struct {
		mu sync.Mutex
		m  map[holdKey]struct{}
		_  [40]byte // keep shards on separate cache lines
	}
}

func (s *seenSet) init() {
	s.seed = maphash.MakeSeed()
	for i := range s.shards {
		s.shards[i].m = map[holdKey]struct{}{}
	}
}

// Seen records that session s made a request. The guard reports the
// sessions it saw to evict once per Config.SeenInterval, as one message per
// interval rather than one per request; evict keeps last_seen_at and the
// live session views current with it. The middleware calls Seen for every
// request it lets through; a session already seen in the interval costs a
// hash and an uncontended map lookup.
func (g *Guard) Seen(s Session) {
	sh := &g.seen.shards[maphash.String(g.seen.seed, s.ID)%seenShards]
	k := holdKey{s.Tenant, s.ID}
	sh.mu.Lock()
	if _, ok := sh.m[k]; !ok {
		sh.m[k] = struct{}{}
	}
	sh.mu.Unlock()
}

// reportSeen sends the sessions seen since the last call, in reports of at
// most events.MaxSeenPerReport sessions, per tenant for a guard limited to
// tenants.
func (g *Guard) reportSeen() {
	batches := map[string][]events.SeenSession{}
	flush := func(scope string) {
		batch := batches[scope]
		if len(batch) == 0 {
			return
		}
		delete(batches, scope)
		subject, err := events.ReportSubject(scope, g.cfg.Instance, "seen")
		if err != nil {
			return
		}
		g.publishReport(subject, events.TypeSessionsSeen, scope, events.SessionsSeen{Instance: g.cfg.Instance, Sessions: batch})
	}
	for i := range g.seen.shards {
		sh := &g.seen.shards[i]
		sh.mu.Lock()
		m := sh.m
		if len(m) == 0 {
			sh.mu.Unlock()
			continue
		}
		// Swapped under the lock: from here on m is this goroutine's alone.
		sh.m = make(map[holdKey]struct{}, len(m))
		sh.mu.Unlock()
		for k := range m {
			scope, ok := g.reportScope(k.tenant)
			if !ok || !events.ValidID(k.tenant) || !events.ValidID(k.id) {
				continue // a holder's bad identifier must not spoil the report
			}
			batches[scope] = append(batches[scope], events.SeenSession{Tenant: k.tenant, Session: k.id})
			if len(batches[scope]) == events.MaxSeenPerReport {
				flush(scope)
			}
		}
	}
	for scope := range batches {
		flush(scope)
	}
}
