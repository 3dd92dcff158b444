package guard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/evict-dev/evict/events"
)

// defaultInstance is host-pid-random, reduced to identifier characters.
func defaultInstance() string {
	host, _ := os.Hostname()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := strings.Map(func(r rune) rune {
		if r < 128 && events.ValidID(string(r)) {
			return r
		}
		return '-'
	}, host)
	if len(name) > 64 {
		name = name[:64]
	}
	return name + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b)
}

// reportGap is the least time between two reports that revocations caused.
// evict stores the reports it received every 20 ms (the registry's
// FlushInterval), keeping each guard's latest, so a sooner one changes
// nothing there. At 1,000 revocations a second, a report per revocation
// from each of ten guards was 10,000 messages a second for evictd to
// decode; a report every 10 ms, 1,000, every other one overwritten before
// it was stored; every 20 ms took about 25 µs of CPU per command off the
// guards and evictd (docs/benchmarks.md, item 48). An operation completes
// once the report after its last revocation is stored: up to a gap and a
// flush after the guard applied it.
const reportGap = 20 * time.Millisecond

func (g *Guard) kickReport() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// report publishes the applied sequence after each catch-up and every
// ReportInterval: one report for a guard of every tenant, one per tenant
// otherwise. Reports are best effort on core NATS: a lost one is replaced
// by the next.
func (g *Guard) report(ctx context.Context) {
	t := time.NewTicker(g.cfg.ReportInterval)
	defer t.Stop()
	seen := time.NewTicker(g.cfg.SeenInterval)
	defer seen.Stop()
	var last uint64
	var lastAt time.Time
	var gap <-chan time.Time // set while a kick waits out reportGap
	for {
		// While a report waits out the gap, it will carry everything
		// applied until then: kicks stay in their channel rather than
		// wake this loop, up to nine wake-ups in ten at a revocation a
		// millisecond (docs/benchmarks.md, item 42).
		kick := g.kick
		if gap != nil {
			kick = nil
		}
		select {
		case <-ctx.Done():
			g.reportSeen() // what was seen before shutdown still counts
			// Tell evict at once that this instance is gone, so that
			// logouts stop waiting for it now rather than once it has been
			// silent for evict's liveness window.
			g.reportApplied(true)
			if err := g.cfg.Conn.FlushTimeout(time.Second); err != nil {
				g.log.Warn("last reports not flushed", "err", err)
			}
			return
		case <-seen.C:
			g.reportSeen()
			continue
		case <-t.C:
		case <-kick:
			if g.appliedSq.Load() == last && time.Since(lastAt) < g.cfg.ReportInterval {
				continue
			}
			if wait := reportGap - time.Since(lastAt); wait > 0 {
				gap = time.After(wait)
				continue
			}
		case <-gap:
			gap = nil
			if g.appliedSq.Load() == last {
				continue
			}
		}
		last, lastAt = g.appliedSq.Load(), time.Now()
		g.reportApplied(false)
	}
}

// reportApplied publishes the applied sequence: one report for a guard of
// every tenant, one per tenant otherwise. stopping marks the last one.
func (g *Guard) reportApplied(stopping bool) {
	for _, f := range g.feeds {
		if f.filter == events.HeartbeatSubject {
			continue
		}
		subject, err := events.ReportSubject(f.tenant, g.cfg.Instance, "applied")
		if err != nil {
			g.log.Error("cannot report", "err", err)
			return
		}
		var tenants []string
		if f.tenant != "" {
			tenants = []string{f.tenant}
		}
		g.publishReport(subject, events.TypeGuardApplied, f.tenant, events.GuardApplied{
			Instance: g.cfg.Instance, Tenants: tenants, AppliedSeq: f.applied.Load(),
			Ready: g.isReady.Load(), StartedAt: g.created, Stopping: stopping,
		})
	}
}

// reportScope is the tenant token of the reports about tenant: "" for a
// guard of every tenant; false for a tenant this guard does not hold.
func (g *Guard) reportScope(tenant string) (string, bool) {
	if len(g.cfg.Tenants) == 0 {
		return "", true
	}
	return tenant, slices.Contains(g.cfg.Tenants, tenant)
}

func (g *Guard) publishReport(subject, typ, tenant string, data any) {
	id, err := uuid.NewV7()
	if err != nil {
		return
	}
	ev := events.New(id.String(), typ, tenant, "", time.Now(), data)
	ev.Source = "/guards/" + g.cfg.Instance
	b, err := json.Marshal(ev)
	if err != nil {
		return
	}
	if err := g.cfg.Conn.Publish(subject, b); err != nil {
		g.log.Warn("report not sent", "subject", subject, "err", err)
	}
}

// reportTermination tells evict how a revoked session with in-flight work
// is ending.
func (g *Guard) reportTermination(s Session, state string, inFlight int, opID string, timedOut bool) {
	scope, ok := g.reportScope(s.Tenant)
	if !ok {
		return
	}
	subject, err := events.ReportSubject(scope, g.cfg.Instance, "session")
	if err != nil {
		return
	}
	g.publishReport(subject, events.TypeSessionTermination, s.Tenant, events.SessionTermination{
		Instance: g.cfg.Instance, Tenant: s.Tenant, User: s.User, Session: s.ID,
		State: state, InFlight: inFlight, OperationID: opID, TimedOut: timedOut,
	})
}
