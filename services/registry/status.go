package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Target states, as GET /v1/operations/{id} shows them.
const (
	TargetPending    = "pending"    // its holder has not applied the revocation yet
	TargetEnforced   = "enforced"   // its holder applied it: the session is refused
	TargetDeferred   = "deferred"   // refused for new requests; in-flight work is finishing
	TargetTerminated = "terminated" // in-flight work ended, or the session expired
	TargetFailed     = "failed"
)

// Operation summaries.
const (
	SummaryPending   = "pending"   // still progressing
	SummaryPartial   = "partial"   // waiting only on holders that are down
	SummaryCompleted = "completed" // every target enforced or terminated, every live guard applied
)

// Target is one session an operation aimed at.
type Target struct {
	Session    string `json:"session_id"`
	User       string `json:"user_id"`
	Client     string `json:"client"`
	Holder     string `json:"holder,omitempty"`
	Device     string `json:"device_id,omitempty"`
	Status     string `json:"status"`
	HolderLive bool   `json:"holder_live"`
	Detail     string `json:"detail,omitempty"`
}

// Guard is a live guard instance serving the operation's tenant.
type Guard struct {
	Instance   string    `json:"instance"`
	AppliedSeq int64     `json:"applied_seq"`
	Applied    bool      `json:"applied"`
	LastReport time.Time `json:"last_report_at"`
}

// Status is what an operation achieved so far.
type Status struct {
	Summary  string         `json:"summary"`
	StateSeq *int64         `json:"state_seq,omitempty"`
	Counts   map[string]int `json:"counts"`
	Total    int            `json:"total_targets"`
	Targets  []Target       `json:"targets"`
	// TargetsTruncated is true when Targets lists only the first targets.
	TargetsTruncated bool `json:"targets_truncated,omitempty"`
	// TargetsPending is true while a large command's targets are still
	// being recorded after its commit (internal/targets): Targets and
	// Counts are not complete yet, and neither is the operation.
	TargetsPending bool    `json:"targets_pending,omitempty"`
	Guards         []Guard `json:"guards"`
	// Pushes are the mobile pushes the operation caused, one per device:
	// pending, sending, pushed, token_removed, failed or dead (retries
	// exhausted). They inform; completion rests on the guards.
	Pushes     []Push         `json:"pushes"`
	PushCounts map[string]int `json:"push_counts"`
}

// Push is one device push of an operation.
type Push struct {
	Session   string     `json:"session_id"`
	User      string     `json:"user_id"`
	Provider  string     `json:"provider"`
	Status    string     `json:"status"`
	Attempts  int        `json:"attempts"`
	LastError string     `json:"last_error,omitempty"`
	PushedAt  *time.Time `json:"pushed_at,omitempty"`
}

// maxListed bounds the targets listed in a status; counts are exact.
const maxListed = 500

// targetsSQL yields the operation's targets: the sessions recorded when it
// was accepted or, for a tenant-wide logout (O(1) at command time), the
// tenant's sessions that were live then.
const targetsSQL = `WITH op AS (
		SELECT id, tenant_id, accepted_at, (targets->>'tenant')::boolean IS TRUE AS tenant_wide
		FROM operations WHERE id = $1),
	-- Each guard instance's report that counts for this tenant: its own, or
	-- its report as a guard of every tenant (a report scoped to another
	-- tenant never counts); the latest if it has both.
	gi AS (
		SELECT DISTINCT ON (g.instance) g.instance, g.applied_seq, g.last_report_at
		FROM guard_instances g, op WHERE g.scope IN ('', op.tenant_id)
		ORDER BY g.instance, g.last_report_at DESC),
	-- The targets with their sessions' termination and expiry. Each branch
	-- reads sessions once: joining them again below made PostgreSQL hash
	-- the 1,000,000 sessions of a tenant-wide logout before the first row,
	-- where the completer's EXISTS wants to stop at the first pending one.
	tgt AS (
		SELECT t.session_id, t.user_id, t.client, t.holder, t.device_id, s.termination, s.expires_at
		FROM operation_targets t JOIN sessions s ON s.tenant_id = t.tenant_id AND s.session_id = t.session_id
		WHERE t.operation_id = $1
		UNION ALL
		SELECT s.session_id, s.user_id, s.client, s.holder, s.device_id, s.termination, s.expires_at
		FROM sessions s, op
		WHERE op.tenant_wide AND s.tenant_id = op.tenant_id AND s.registered_at <= op.accepted_at
		  AND (s.ended_at IS NULL OR s.ended_at >= op.accepted_at)
		  AND (s.revoked_at IS NULL OR s.revoked_at >= op.accepted_at OR s.revoke_operation = op.id))
	SELECT s.session_id, s.user_id, s.client, coalesce(s.holder, ''), coalesce(s.device_id, ''),
		CASE
			WHEN s.termination = 'terminated' THEN 'terminated'
			WHEN s.termination = 'deferred' THEN 'deferred'
			WHEN $2::bigint IS NULL THEN 'pending'
			WHEN s.holder IS NOT NULL AND g.applied_seq >= $2 THEN 'enforced'
			-- A session registered without a holder is enforced once every
			-- live guard of the tenant applied the revocation, and there is one.
			WHEN s.holder IS NULL AND $3 AND $5 THEN 'enforced'
			WHEN s.expires_at IS NOT NULL AND s.expires_at < clock_timestamp() THEN 'terminated'
			ELSE 'pending'
		END AS status,
		CASE WHEN s.holder IS NULL THEN $5
		     ELSE coalesce(g.last_report_at > clock_timestamp() - $4::interval, false) END AS live,
		CASE WHEN s.termination IS NULL AND s.expires_at IS NOT NULL AND s.expires_at < clock_timestamp()
			AND NOT coalesce(g.applied_seq >= $2, false) AND NOT (s.holder IS NULL AND $3 AND $5) THEN 'expired'
		     ELSE '' END AS detail
	FROM tgt s
	LEFT JOIN gi g ON g.instance = s.holder`

// head is what the status of an operation starts from: its row, and the
// live guards of its tenant with what they applied.
type head struct {
	stateSeq       *int64
	published      bool
	targetsPending bool
	guards         []Guard
	allApplied     bool   // published, and every live guard applied its events
	live           string // the liveness window, as an interval
}

// head reads id's head.
func (r *Registry) head(ctx context.Context, id any) (head, error) {
	var h head
	var tenant string
	var published *time.Time
	err := r.cfg.Pool.QueryRow(ctx, `SELECT tenant_id, state_seq, published_at,
			EXISTS (SELECT 1 FROM pending_targets p WHERE p.operation_id = o.id)
		FROM operations o WHERE id = $1`, id).
		Scan(&tenant, &h.stateSeq, &published, &h.targetsPending)
	if errors.Is(err, pgx.ErrNoRows) {
		return h, fmt.Errorf("registry: operation %v: %w", id, pgx.ErrNoRows)
	}
	if err != nil {
		return h, err
	}
	h.published = published != nil
	h.live = r.liveInterval()
	rows, err := r.cfg.Pool.Query(ctx, `SELECT instance, applied_seq, last_report_at FROM guard_instances
		WHERE last_report_at > clock_timestamp() - $1::interval AND scope IN ('', $2)
		ORDER BY instance`, h.live, tenant)
	if err != nil {
		return h, err
	}
	h.guards = []Guard{}
	h.allApplied = h.published
	for rows.Next() {
		var g Guard
		if err := rows.Scan(&g.Instance, &g.AppliedSeq, &g.LastReport); err != nil {
			rows.Close()
			return h, err
		}
		g.Applied = h.published && (h.stateSeq == nil || g.AppliedSeq >= *h.stateSeq)
		h.allApplied = h.allApplied && g.Applied
		h.guards = append(h.guards, g)
	}
	rows.Close()
	return h, rows.Err()
}

// liveInterval is the liveness window as a PostgreSQL interval.
func (r *Registry) liveInterval() string {
	return fmt.Sprintf("%d milliseconds", r.cfg.Liveness.Milliseconds())
}

// targetArgs are the arguments of targetsSQL.
func (h head) targetArgs(id any) []any {
	return []any{id, h.stateSeq, h.allApplied, h.live, len(h.guards) > 0}
}

// Operation computes the status of operation id.
func (r *Registry) Operation(ctx context.Context, id any) (Status, error) {
	st := Status{Counts: map[string]int{}, Targets: []Target{}, Guards: []Guard{}, Pushes: []Push{}, PushCounts: map[string]int{}}
	h, err := r.head(ctx, id)
	if err != nil {
		return st, err
	}
	st.StateSeq, st.TargetsPending, st.Guards = h.stateSeq, h.targetsPending, h.guards
	published, allApplied := h.published, h.allApplied

	rows, err := r.cfg.Pool.Query(ctx, targetsSQL+" ORDER BY s.session_id", h.targetArgs(id)...)
	if err != nil {
		return st, err
	}
	defer rows.Close()
	pendingLive, pendingDown := 0, 0
	for rows.Next() {
		var t Target
		if err := rows.Scan(&t.Session, &t.User, &t.Client, &t.Holder, &t.Device, &t.Status, &t.HolderLive, &t.Detail); err != nil {
			return st, err
		}
		st.Total++
		st.Counts[t.Status]++
		switch {
		case t.Status == TargetPending && t.HolderLive:
			pendingLive++
		case t.Status == TargetPending && t.Holder == "":
			pendingDown++
			t.Detail = "no_live_guard"
		case t.Status == TargetPending:
			pendingDown++
			t.Detail = "holder_down"
		}
		if len(st.Targets) < maxListed {
			st.Targets = append(st.Targets, t)
		} else {
			st.TargetsTruncated = true
		}
	}
	if err := rows.Err(); err != nil {
		return st, err
	}
	if err := r.pushes(ctx, id, &st); err != nil {
		return st, err
	}
	switch {
	case !published || st.TargetsPending || pendingLive > 0 || st.Counts[TargetDeferred] > 0 || !allApplied:
		st.Summary = SummaryPending
	case pendingDown > 0:
		st.Summary = SummaryPartial
	default:
		st.Summary = SummaryCompleted
	}
	return st, nil
}

// complete stamps completed_at on operations that have just completed.
//
// One query finds them (see candidates), and one statement stamps them.
// Most rounds look only at operations accepted in the last recentWindow,
// which is where completions happen within milliseconds; every
// fullRoundEvery a round looks at all of them, so an operation that takes
// longer is stamped within fullRoundEvery of completing. The window is
// short because the index of incomplete operations keeps an entry for
// each operation stamped since the last vacuum, and a round reads those
// of its window: at 1,000 commands a second, a 10 s window made each
// round read 5,000 of them (4 ms). Operations left incomplete
// pile up while a tenant has no live guard or a holder is down (5,500 of
// them after a minute of commands with every guard cut off, in
// evict-bench), and reading them all every 20 ms kept a core of
// PostgreSQL busy on an otherwise idle system.
func (r *Registry) complete(ctx context.Context) error {
	now := time.Now()
	full := now.Sub(r.lastFull) >= fullRoundEvery
	window := recentWindow
	if full {
		window = 0
	}
	// An operation that stays incomplete (a holder is down, a tenant-wide
	// logout over many sessions) is looked at less and less often: 20 ms,
	// doubling up to 2 s, and once it is older, up to a tenth of its age
	// and at most a minute, so that what waits on a holder that is gone
	// costs next to nothing.
	waiting := make([][16]byte, 0, len(r.backoff))
	for id, b := range r.backoff {
		if now.Before(b.next) {
			waiting = append(waiting, id)
		}
	}
	cands, err := r.candidates(ctx, window, waiting)
	if err != nil {
		return err
	}
	if full {
		r.lastFull = now
		// Forget the backoff of operations no longer offered: completed
		// by another replica, or left out until their guards catch up.
		current := make(map[[16]byte]bool, len(cands))
		for _, c := range cands {
			current[c.id] = true
		}
		for id := range r.backoff {
			if !current[id] {
				delete(r.backoff, id)
			}
		}
	}
	var done [][16]byte
	for _, c := range cands {
		switch {
		case !c.checked:
		case c.complete:
			delete(r.backoff, c.id)
			done = append(done, c.id)
		default:
			b := r.backoff[c.id]
			b.wait = min(max(2*b.wait, r.cfg.FlushInterval), maxWait(now.Sub(c.accepted)))
			b.next = now.Add(b.wait)
			r.backoff[c.id] = b
		}
	}
	if len(done) == 0 {
		return nil
	}
	// Another replica may have stamped some already: they return no row.
	// Planned for its arguments: a cached generic plan, made while few
	// operations were incomplete, read the partial index of incomplete
	// operations from end to end instead of looking the ids up.
	rows, err := r.cfg.Pool.Query(ctx, `UPDATE operations SET completed_at = clock_timestamp()
		WHERE id = ANY($1::uuid[]) AND completed_at IS NULL
		RETURNING extract(epoch FROM completed_at - accepted_at)::float8`, pgx.QueryExecModeCacheDescribe, done)
	if err != nil {
		return err
	}
	secs, err := pgx.CollectRows(rows, pgx.RowTo[float64])
	if err != nil {
		return err
	}
	for _, s := range secs {
		r.completion.Observe(s)
	}
	return nil
}

// candidate is an operation that may have completed: checked tells whether
// its targets were looked at, complete what they said.
type candidate struct {
	id                [16]byte
	accepted          time.Time
	checked, complete bool
}

// candidatesSQL offers the operations accepted in the last $2 (on
// PostgreSQL's clock, which stamped them) that may have completed, the
// latest first: published, their targets recorded, and
// their events applied by every live guard of their tenant. That leaves
// out most incomplete operations, most of the time, before any target is
// read. For each, except those listed in $3 and all tenant-wide ones but
// the oldest, it tells whether it is complete, as Operation's summary would
// say: no target is pending or
// deferred (see targetsSQL, whose statuses this repeats for an operation
// every live guard applied). The EXISTS stops at the first such target.
//
// At 1,000 commands a second, looking at each operation on its own (four
// queries each) cost PostgreSQL more than the commands did.
//
// The window's bound is now(), the statement's start: with the volatile
// clock_timestamp() it was no index condition, and every round read the
// whole index of incomplete operations, 24,000 entries and 1,800 pages
// (4 ms) after 22,000 commands on a database that had not been vacuumed.
const candidatesSQL = `WITH live AS (
		SELECT scope, min(applied_seq) AS applied FROM guard_instances
		WHERE last_report_at > clock_timestamp() - $1::interval GROUP BY scope),
	cand AS (
		SELECT o.id, o.tenant_id, o.accepted_at, o.state_seq,
			(o.targets->>'tenant')::boolean IS TRUE AS tenant_wide,
			EXISTS (SELECT 1 FROM live l WHERE l.scope IN ('', o.tenant_id)) AS guarded
		FROM operations o
		-- LEAST ignores a NULL, and is NULL when the tenant has no live guard.
		LEFT JOIN live t ON t.scope = o.tenant_id AND t.scope <> ''
		WHERE o.completed_at IS NULL AND o.published_at IS NOT NULL AND o.accepted_at > now() - $2::interval
		  AND NOT EXISTS (SELECT 1 FROM pending_targets p WHERE p.operation_id = o.id)
		  AND NOT coalesce(o.state_seq > least(t.applied, (SELECT applied FROM live WHERE scope = '')), false)
		ORDER BY o.accepted_at DESC LIMIT 1000),
	due AS (SELECT c.*, c.id <> ALL($3::uuid[]) AS due FROM cand c),
	-- One tenant-wide operation a round, the oldest due: each reads the
	-- sessions of its tenant, a million of them in a big tenant.
	wide AS (SELECT id FROM due WHERE tenant_wide AND due ORDER BY accepted_at LIMIT 1),
	checked AS (SELECT d.*, d.due AND (NOT d.tenant_wide OR d.id IN (SELECT id FROM wide)) AS checked FROM due d)
	SELECT c.id, c.accepted_at, c.checked,
		c.checked AND NOT EXISTS (
			SELECT 1 FROM (
				SELECT s.termination, s.expires_at,
					-- Enforced: its holder's latest report that counts for
					-- the tenant applied the events; a session without a
					-- holder, once every live guard did, and there is one.
					CASE WHEN s.holder IS NOT NULL THEN coalesce((
						SELECT g.applied_seq >= c.state_seq FROM guard_instances g
						WHERE g.instance = s.holder AND g.scope IN ('', c.tenant_id)
						ORDER BY g.last_report_at DESC LIMIT 1), false)
					ELSE c.guarded END AS applied
				FROM operation_targets t JOIN sessions s ON s.tenant_id = t.tenant_id AND s.session_id = t.session_id
				WHERE t.operation_id = c.id
				UNION ALL
				-- The same for every session of a tenant-wide logout, with
				-- each holder's latest report looked up once: as a subquery
				-- per session it ran a million times for a tenant of a
				-- million sessions, 2.2 s a check instead of 0.3 s.
				SELECT s.termination, s.expires_at,
					CASE WHEN s.holder IS NOT NULL THEN coalesce(h.applied_seq >= c.state_seq, false)
					ELSE c.guarded END
				FROM sessions s
				LEFT JOIN (SELECT DISTINCT ON (g.instance) g.instance, g.applied_seq FROM guard_instances g
					WHERE g.scope IN ('', c.tenant_id) ORDER BY g.instance, g.last_report_at DESC) h ON h.instance = s.holder
				WHERE c.tenant_wide AND s.tenant_id = c.tenant_id AND s.registered_at <= c.accepted_at
				  AND (s.ended_at IS NULL OR s.ended_at >= c.accepted_at)
				  AND (s.revoked_at IS NULL OR s.revoked_at >= c.accepted_at OR s.revoke_operation = c.id)) s
			WHERE s.termination IS DISTINCT FROM 'terminated' AND (
				s.termination = 'deferred' OR c.state_seq IS NULL
				-- Neither enforced nor expired.
				OR NOT (s.applied OR coalesce(s.expires_at < clock_timestamp(), false)))
		) AS complete
	FROM checked c`

// candidates runs candidatesSQL over the operations accepted in the last
// window, or all of them when window is 0; the operations in skip are
// offered but not checked.
func (r *Registry) candidates(ctx context.Context, window time.Duration, skip [][16]byte) ([]candidate, error) {
	if skip == nil {
		skip = [][16]byte{}
	}
	within := "100 years"
	if window > 0 {
		within = fmt.Sprintf("%d milliseconds", window.Milliseconds())
	}
	rows, err := r.cfg.Pool.Query(ctx, candidatesSQL, r.liveInterval(), within, skip)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (candidate, error) {
		var c candidate
		err := row.Scan(&c.id, &c.accepted, &c.checked, &c.complete)
		return c, err
	})
}

// Completion rounds: see complete.
const (
	recentWindow   = time.Second
	fullRoundEvery = 2 * time.Second
)

// maxWait is the longest wait between two completion checks of an
// operation of the given age: 2 s, or a tenth of its age up to a minute.
func maxWait(age time.Duration) time.Duration {
	return min(max(2*time.Second, age/10), time.Minute)
}

// pushes adds the operation's device pushes to st.
func (r *Registry) pushes(ctx context.Context, id any, st *Status) error {
	rows, err := r.cfg.Pool.Query(ctx, `SELECT session_id, user_id, provider, status, attempts, coalesce(last_error, ''), pushed_at,
			count(*) OVER (PARTITION BY status)
		FROM push_deliveries WHERE operation_id = $1 ORDER BY session_id`, id)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var p Push
		var n int
		if err := rows.Scan(&p.Session, &p.User, &p.Provider, &p.Status, &p.Attempts, &p.LastError, &p.PushedAt, &n); err != nil {
			return err
		}
		st.PushCounts[p.Status] = n
		if len(st.Pushes) < maxListed {
			st.Pushes = append(st.Pushes, p)
		}
	}
	return rows.Err()
}
