// Package registry keeps track of session holders and tells when an
// operation has been enforced.
//
// Guards report, on core NATS, the EVICT_STATE sequence they have applied
// (one small message per guard instance, whatever the number of sessions)
// and the graceful end of sessions with in-flight work. The registry stores
// those reports and compares them with the sequence of each operation's
// events, which the relay records: a target session is enforced once its
// holder has applied that sequence. It also stamps each operation's
// completion time.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/changes"
	"github.com/evict-dev/evict/internal/wake"
)

// Config configures a Registry.
type Config struct {
	// Pool is required; Conn is required by Run.
	Pool *pgxpool.Pool
	Conn *nats.Conn
	// Liveness is how long a guard instance counts as live after its last
	// report. Default 15s (three of the guards' default report intervals).
	Liveness time.Duration
	// FlushInterval batches applied reports into the database. Default 20ms.
	FlushInterval time.Duration
	// SeenChangeEvery is the least time between two "seen" changes of one
	// session in the live feed; last_seen_at itself follows every report.
	// Default 60s.
	SeenChangeEvery time.Duration
	// Retention is how long ended, revoked and expired sessions and the
	// session change feed are kept. Default 720h.
	Retention time.Duration
	// TidyInterval is how often housekeeping runs (see tidy). Default 30s.
	TidyInterval time.Duration
	// Registerer receives the registry's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Wake carries the hints that a tenant's sessions changed to the live
	// views; nil: none are sent.
	Wake *wake.Hub
}

// Registry ingests guard reports and completes operations.
type Registry struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	applied map[reportKey]events.GuardApplied // latest unflushed report per instance and scope
	seenNow map[events.SeenSession]struct{}   // sessions seen since the last flush
	seen    map[string]time.Time

	// changed is closed and replaced whenever a flush may have completed
	// operations, to wake long polls.
	changedMu sync.Mutex
	changed   chan struct{}

	// backoff spaces out the completion checks of each incomplete
	// operation; only Run's goroutine uses it.
	backoff map[[16]byte]backoff
	// lastFull is when complete last looked at every incomplete operation.
	lastFull time.Time

	reports    *prometheus.CounterVec
	completion prometheus.Histogram
}

// New returns a Registry for cfg.
func New(cfg Config) (*Registry, error) {
	if cfg.Pool == nil {
		return nil, errors.New("registry: Config.Pool is required")
	}
	if cfg.Liveness <= 0 {
		cfg.Liveness = 15 * time.Second
	}
	if cfg.SeenChangeEvery <= 0 {
		cfg.SeenChangeEvery = time.Minute
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 720 * time.Hour
	}
	if cfg.TidyInterval <= 0 {
		cfg.TidyInterval = 30 * time.Second
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 20 * time.Millisecond
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	r := &Registry{cfg: cfg, log: log.With("component", "registry"), applied: map[reportKey]events.GuardApplied{},
		seen: map[string]time.Time{}, changed: make(chan struct{}), seenNow: map[events.SeenSession]struct{}{},
		backoff: map[[16]byte]backoff{},
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evict_guard_reports_total", Help: "Reports received from guards, by kind (applied, session)."}, []string{"kind"}),
		completion: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "evict_operation_completion_seconds",
			Help:    "Time from an operation's acceptance to its completion: every target enforced or terminated.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(r.reports, r.completion, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "evict_guards_live", Help: "Guard instances that reported within the liveness window.",
		}, r.liveCount))
	}
	return r, nil
}

func (r *Registry) liveCount() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for instance, at := range r.seen {
		if time.Since(at) <= r.cfg.Liveness {
			n++
		} else if time.Since(at) > 10*r.cfg.Liveness {
			delete(r.seen, instance)
		}
	}
	return float64(n)
}

// backoff is when an incomplete operation is next looked at.
type backoff struct {
	wait time.Duration
	next time.Time
}

// Liveness is the configured liveness window.
func (r *Registry) Liveness() time.Duration { return r.cfg.Liveness }

// Changed returns a channel closed at the next flush of reports.
func (r *Registry) Changed() <-chan struct{} {
	r.changedMu.Lock()
	defer r.changedMu.Unlock()
	return r.changed
}

func (r *Registry) signal() {
	r.changedMu.Lock()
	close(r.changed)
	r.changed = make(chan struct{})
	r.changedMu.Unlock()
}

// Run ingests reports until ctx ends.
func (r *Registry) Run(ctx context.Context) error {
	if r.cfg.Conn == nil {
		return errors.New("registry: Config.Conn is required to run")
	}
	sub, err := r.cfg.Conn.Subscribe(events.ReportPrefix+">", func(m *nats.Msg) { r.ingest(ctx, m) })
	if err != nil {
		return fmt.Errorf("registry: subscribe: %w", err)
	}
	defer sub.Unsubscribe() //nolint:errcheck // the connection closes next
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.janitor(ctx)
	}()
	defer wg.Wait()
	t := time.NewTicker(r.cfg.FlushInterval)
	defer t.Stop()
	var nextComplete time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := r.flush(ctx); err != nil && ctx.Err() == nil {
				r.log.WarnContext(ctx, "flush guard reports", "err", err)
			}
			if now := time.Now(); !now.Before(nextComplete) {
				if err := r.complete(ctx); err != nil && ctx.Err() == nil {
					r.log.WarnContext(ctx, "complete operations", "err", err)
				}
				nextComplete = nextRound(now, time.Since(now))
			}
		}
	}
}

// completeShare bounds the share of time the completer's queries take:
// after a round that took d, the next starts d·(completeShare-1) later at
// the earliest. Rounds take a millisecond or two; but after tenant-wide
// logouts of a tenant of 1,000,000 sessions, with the tenant's sweep
// marking its sessions a thousand a second, the candidates query ran half
// of the time, on a PostgreSQL core that the commands needed (evict-bench,
// pg_stat_activity sampled every 20 ms during the baseline scenario).
const completeShare = 5

// nextRound is the earliest start of the completer's round after one that
// started at start and took took.
func nextRound(start time.Time, took time.Duration) time.Time {
	return start.Add(completeShare * took)
}

type envelope[T any] struct {
	Type string `json:"type"`
	Data T      `json:"data"`
}

// reportKey names a guard's applied sequence: per instance, and per tenant
// for a guard limited to tenants (scope "" for a guard of every tenant).
type reportKey struct{ scope, instance string }

// ingest takes a report. A report on a tenant's subject counts for that
// tenant only: NATS lets a tenant-scoped guard publish on its tenants'
// subjects alone, so whatever its data says about other tenants is refused.
func (r *Registry) ingest(ctx context.Context, m *nats.Msg) {
	scope, instance, kind, err := events.ParseReportSubject(m.Subject)
	if err != nil {
		return
	}
	inScope := func(tenant string) bool { return events.ValidID(tenant) && (scope == "" || tenant == scope) }
	r.reports.WithLabelValues(kind).Inc()
	switch kind {
	case "applied":
		var e envelope[events.GuardApplied]
		if err := json.Unmarshal(m.Data, &e); err != nil || e.Type != events.TypeGuardApplied || e.Data.Instance != instance ||
			slices.ContainsFunc(e.Data.Tenants, func(t string) bool { return !inScope(t) }) ||
			(scope != "" && len(e.Data.Tenants) != 1) {
			r.log.Warn("malformed guard report skipped", "subject", m.Subject)
			return
		}
		r.mu.Lock()
		r.applied[reportKey{scope, instance}] = e.Data
		if e.Data.Stopping {
			delete(r.seen, instance)
		} else {
			r.seen[instance] = time.Now()
		}
		r.mu.Unlock()
	case "seen":
		var e envelope[events.SessionsSeen]
		if err := json.Unmarshal(m.Data, &e); err != nil || e.Type != events.TypeSessionsSeen || e.Data.Instance != instance ||
			len(e.Data.Sessions) > events.MaxSeenPerReport ||
			slices.ContainsFunc(e.Data.Sessions, func(s events.SeenSession) bool { return !inScope(s.Tenant) || !events.ValidID(s.Session) }) {
			r.log.Warn("malformed seen report skipped", "subject", m.Subject)
			return
		}
		r.mu.Lock()
		for _, s := range e.Data.Sessions {
			r.seenNow[s] = struct{}{}
		}
		r.mu.Unlock()
	case "session":
		var e envelope[events.SessionTermination]
		if err := json.Unmarshal(m.Data, &e); err != nil || e.Type != events.TypeSessionTermination || e.Data.Instance != instance ||
			!inScope(e.Data.Tenant) || !events.ValidID(e.Data.Session) ||
			(e.Data.State != events.TerminationDeferred && e.Data.State != events.TerminationTerminated) {
			r.log.Warn("malformed session report skipped", "subject", m.Subject)
			return
		}
		if err := r.recordTermination(ctx, e.Data); err != nil {
			r.log.Warn("session report not recorded", "err", err, "tenant", e.Data.Tenant, "session", e.Data.Session)
		}
	}
}

// flushSeen moves last_seen_at of the sessions seen since the last flush
// and adds a "seen" change for those not seen for SeenChangeEvery.
func (r *Registry) flushSeen(ctx context.Context) error {
	r.mu.Lock()
	if len(r.seenNow) == 0 {
		r.mu.Unlock()
		return nil
	}
	batch := r.seenNow
	r.seenNow = map[events.SeenSession]struct{}{}
	r.mu.Unlock()
	var tenants, sessions []string
	for s := range batch {
		tenants, sessions = append(tenants, s.Tenant), append(sessions, s.Session)
	}
	every := fmt.Sprintf("%d milliseconds", r.cfg.SeenChangeEvery.Milliseconds())
	var woken []string // tenants whose feed got a change
	err := pgx.BeginFunc(ctx, r.cfg.Pool, func(tx pgx.Tx) error {
		woken = woken[:0]
		rows, err := tx.Query(ctx, `WITH seen AS (
				SELECT s.tenant_id, s.session_id, s.user_id, s.last_seen_at AS before
				FROM sessions s JOIN unnest($1::text[], $2::text[]) AS u(t, id) ON s.tenant_id = u.t AND s.session_id = u.id
				WHERE s.ended_at IS NULL AND s.revoked_at IS NULL
				ORDER BY s.tenant_id, s.session_id FOR UPDATE OF s)
			UPDATE sessions s SET last_seen_at = clock_timestamp() FROM seen
			WHERE s.tenant_id = seen.tenant_id AND s.session_id = seen.session_id
			RETURNING s.tenant_id, s.user_id, s.session_id, seen.before < clock_timestamp() - $3::interval`,
			tenants, sessions, every)
		if err != nil {
			return err
		}
		type change struct{ tenant, user, session string }
		var due []change
		var c change
		var isDue bool
		if _, err := pgx.ForEachRow(rows, []any{&c.tenant, &c.user, &c.session, &isDue}, func() error {
			if isDue {
				due = append(due, c)
			}
			return nil
		}); err != nil {
			return err
		}
		slices.SortFunc(due, func(a, b change) int { return strings.Compare(a.tenant, b.tenant) })
		for _, d := range due {
			if err := changes.Record(ctx, tx, d.tenant, d.user, d.session, changes.Seen, nil); err != nil {
				return err
			}
			if len(woken) == 0 || woken[len(woken)-1] != d.tenant {
				woken = append(woken, d.tenant)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.cfg.Wake.Sessions(woken...)
	return nil
}

// recordTermination stores a deferred or terminated state reported by the
// session's own holder; reports from other instances are ignored.
func (r *Registry) recordTermination(ctx context.Context, t events.SessionTermination) error {
	detail, _ := json.Marshal(map[string]any{"instance": t.Instance, "operation_id": t.OperationID, "timed_out": t.TimedOut, "in_flight": t.InFlight})
	err := pgx.BeginFunc(ctx, r.cfg.Pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `WITH s AS (
			UPDATE sessions SET termination = $4,
				terminated_at = CASE WHEN $4 = 'terminated' THEN clock_timestamp() END
			WHERE tenant_id = $1 AND session_id = $2 AND holder = $3
			  AND termination IS DISTINCT FROM 'terminated'
			RETURNING user_id)
		INSERT INTO session_changes (tenant_id, user_id, session_id, kind, detail)
		SELECT $1, user_id, $2, $4, $5 FROM s`,
			t.Tenant, t.Session, t.Instance, t.State, detail)
		return err
	})
	if err == nil {
		r.signal()
		r.cfg.Wake.Sessions(t.Tenant)
	}
	return err
}

func (r *Registry) flush(ctx context.Context) error {
	if err := r.flushSeen(ctx); err != nil {
		return err
	}
	r.mu.Lock()
	if len(r.applied) == 0 {
		r.mu.Unlock()
		return nil
	}
	batch := r.applied
	r.applied = map[reportKey]events.GuardApplied{}
	r.mu.Unlock()
	var instances, scopes []string
	var seqs []int64
	var started []time.Time
	var tenants []string // each instance's tenants, comma-joined (identifiers hold no commas)
	var ready, stopping []bool
	for k, a := range batch {
		instances, scopes = append(instances, k.instance), append(scopes, k.scope)
		seqs = append(seqs, int64(a.AppliedSeq))
		started = append(started, a.StartedAt)
		tenants = append(tenants, strings.Join(a.Tenants, ","))
		ready = append(ready, a.Ready)
		stopping = append(stopping, a.Stopping)
	}
	// A guard that said it stops is not live from now on: its last report
	// is dated -infinity, and the housekeeping deletes it.
	_, err := r.cfg.Pool.Exec(ctx, `INSERT INTO guard_instances AS g (instance, scope, tenants, applied_seq, started_at, last_report_at)
		SELECT i, sc, CASE WHEN t = '' THEN '{}'::text[] ELSE string_to_array(t, ',') END,
		       CASE WHEN rd THEN s ELSE 0 END, st, CASE WHEN stop THEN '-infinity' ELSE clock_timestamp() END
		FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::text[], $5::bool[], $6::text[], $7::bool[]) AS u(i, s, st, t, rd, sc, stop)
		ON CONFLICT (instance, scope) DO UPDATE SET
			tenants = excluded.tenants,
			-- A restarted instance starts over: its sequence may go down.
			applied_seq = CASE WHEN excluded.started_at = g.started_at THEN greatest(g.applied_seq, excluded.applied_seq)
			                   ELSE excluded.applied_seq END,
			started_at = excluded.started_at,
			last_report_at = excluded.last_report_at`,
		instances, seqs, started, tenants, ready, scopes, stopping)
	if err != nil {
		return err
	}
	r.signal()
	return nil
}
