package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// janitorLock keeps replicas from sweeping the same rows at once ("evictjan").
const janitorLock = 0x65766963746a616e

// The sweep marks the sessions that a tenant-wide logout covered as
// revoked (that logout touched no session row, to stay O(1)); it only keeps
// the live-session indexes small, since listings, counts and statuses apply
// the tenant's watermark themselves. So it goes in small steps: sweepBatch
// sessions every sweepEvery, each step a short transaction of its own.
// Marking the 1,000,000 sessions of a tenant in one transaction kept
// PostgreSQL busy for minutes, and in steps of 30,000 each step still
// delayed the logouts committed during it by up to a second (evict-bench's
// cache baseline and cold start, which follow its tenant-wide runs). 1,000
// a second mark 1,000,000 in 17 minutes.
const (
	sweepBatch = 1_000
	sweepEvery = time.Second
)

// sweep marks up to sweepBatch sessions covered by a tenant-wide logout
// as revoked by it, those of one tenant not swept yet, found through the
// index of its live sessions; a step that finds fewer marks the tenant
// swept, unless a newer logout raised its watermark meanwhile.
func (r *Registry) sweep(ctx context.Context) error {
	return r.locked(ctx, func(tx pgx.Tx) error {
		var tenant string
		var nb time.Time
		err := tx.QueryRow(ctx, `SELECT id, not_before FROM tenants
			WHERE not_before IS NOT NULL AND NOT not_before_swept ORDER BY id LIMIT 1`).Scan(&tenant, &nb)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("registry: sweep tenant logouts: %w", err)
		}
		tag, err := tx.Exec(ctx, `UPDATE sessions s SET revoked_at = t.not_before, revoke_cause = t.not_before_cause,
				revoke_reason = t.not_before_reason, revoke_operation = t.not_before_operation
			FROM tenants t
			WHERE t.id = $1 AND s.tenant_id = $1 AND s.session_id IN (
				SELECT session_id FROM sessions
				WHERE tenant_id = $1 AND ended_at IS NULL AND revoked_at IS NULL AND issued_at <= $2
				LIMIT $3)`, tenant, nb, sweepBatch)
		if err != nil {
			return fmt.Errorf("registry: sweep tenant logouts: %w", err)
		}
		if tag.RowsAffected() < sweepBatch {
			if _, err := tx.Exec(ctx, "UPDATE tenants SET not_before_swept = true WHERE id = $1 AND not_before = $2", tenant, nb); err != nil {
				return fmt.Errorf("registry: sweep tenant logouts: %w", err)
			}
		}
		return nil
	})
}

// tidy deletes history older than the retention: ended, revoked and
// expired sessions, the change feed, and guard instances long silent.
// Audit rows and operations are kept.
func (r *Registry) tidy(ctx context.Context) error {
	return r.locked(ctx, func(tx pgx.Tx) error {
		keep := fmt.Sprintf("%d seconds", int64(r.cfg.Retention.Seconds()))
		if _, err := tx.Exec(ctx, `DELETE FROM sessions WHERE
				ended_at < clock_timestamp() - $1::interval OR revoked_at < clock_timestamp() - $1::interval
				OR expires_at < clock_timestamp() - $1::interval`, keep); err != nil {
			return fmt.Errorf("registry: purge sessions: %w", err)
		}
		if _, err := tx.Exec(ctx, "DELETE FROM session_changes WHERE at < clock_timestamp() - $1::interval", keep); err != nil {
			return fmt.Errorf("registry: purge session changes: %w", err)
		}
		_, err := tx.Exec(ctx, "DELETE FROM guard_instances WHERE last_report_at < clock_timestamp() - $1::interval", keep)
		return err
	})
}

// locked runs fn in a transaction that holds the janitor lock, or does
// nothing while another replica's janitor holds it.
func (r *Registry) locked(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, r.cfg.Pool, func(tx pgx.Tx) error {
		var mine bool
		if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", janitorLock).Scan(&mine); err != nil || !mine {
			return err
		}
		return fn(tx)
	})
}

// janitor sweeps every sweepEvery (or TidyInterval, if shorter) and tidies
// every TidyInterval until ctx ends.
func (r *Registry) janitor(ctx context.Context) {
	tidy := time.NewTicker(r.cfg.TidyInterval)
	defer tidy.Stop()
	sweep := time.NewTicker(min(sweepEvery, r.cfg.TidyInterval))
	defer sweep.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case <-sweep.C:
			err = r.sweep(ctx)
		case <-tidy.C:
			err = r.tidy(ctx)
		}
		if err != nil && ctx.Err() == nil {
			r.log.WarnContext(ctx, "housekeeping", "err", err)
		}
	}
}
