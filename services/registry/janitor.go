package registry

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// janitorLock keeps replicas from sweeping the same rows at once ("evictjan").
const janitorLock = 0x65766963746a616e

// sweepBatch is how many sessions one sweep statement marks, and
// sweepBatches how many statements one round of housekeeping runs. The
// sweep only keeps the live-session indexes small (listings and counts
// apply the tenant's watermark themselves), so it is paced: after a
// tenant-wide logout of 1,000,000 sessions, marking them all in one round
// kept PostgreSQL busy for minutes, and logouts of every tenant waited for
// its CPU and WAL (evict-bench's cold start and cache baseline, which come
// after its tenant-wide runs, took twice as long). 30,000 sessions a round,
// every 30 s by default, mark 1,000,000 in 17 minutes.
const (
	sweepBatch   = 10_000
	sweepBatches = 3
)

// tidy runs one round of housekeeping: it marks sessions that a tenant-wide
// logout covered as revoked (that logout touched no session row, to stay
// O(1); marking them keeps the live-session indexes small), and deletes
// history older than the retention: ended, revoked and expired sessions,
// and the change feed. Audit rows and operations are kept.
func (r *Registry) tidy(ctx context.Context) error {
	return pgx.BeginFunc(ctx, r.cfg.Pool, func(tx pgx.Tx) error {
		var mine bool
		if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", janitorLock).Scan(&mine); err != nil || !mine {
			return err
		}
		for range sweepBatches {
			tag, err := tx.Exec(ctx, `UPDATE sessions s SET revoked_at = t.not_before, revoke_cause = t.not_before_cause,
					revoke_reason = t.not_before_reason, revoke_operation = t.not_before_operation
				FROM tenants t
				WHERE s.tenant_id = t.id AND (s.tenant_id, s.session_id) IN (
					SELECT s2.tenant_id, s2.session_id FROM sessions s2 JOIN tenants t2 ON t2.id = s2.tenant_id
					WHERE s2.ended_at IS NULL AND s2.revoked_at IS NULL AND t2.not_before IS NOT NULL
					  AND s2.issued_at <= t2.not_before
					LIMIT $1)`, sweepBatch)
			if err != nil {
				return fmt.Errorf("registry: sweep tenant logouts: %w", err)
			}
			if tag.RowsAffected() < sweepBatch {
				break
			}
		}
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

// janitor runs tidy every TidyInterval until ctx ends.
func (r *Registry) janitor(ctx context.Context) {
	t := time.NewTicker(r.cfg.TidyInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.tidy(ctx); err != nil && ctx.Err() == nil {
				r.log.WarnContext(ctx, "housekeeping", "err", err)
			}
		}
	}
}
