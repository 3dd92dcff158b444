// Package targets records what a logout of users did to their registered
// sessions: marks the sessions revoked, keeps them as the operation's
// targets (whose holders must confirm), and appends them to the tenant's
// session feed.
//
// For a few users that is done inside the command's transaction. For many
// it is most of the command's cost (PostgreSQL updates every session row
// through its indexes: 300,000 rows for a bulk logout of 100,000 users took
// seconds), and none of it is needed to enforce the logout: the guards
// enforce the watermarks. So a large command commits its watermarks and
// events first and leaves the rest in pending_targets, which Record works
// through after the commit, Slice users per transaction, each short. A row
// left by a crash is picked up by RecordAll.
package targets

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/evict-dev/evict/internal/wake"
)

// Inline is the most users whose sessions a command records in its own
// transaction; above it, Defer.
const Inline = 1000

// Slice is how many users one transaction of Record handles.
const Slice = 1000

// Logout is a logout of users, as a command decided it.
type Logout struct {
	Operation uuid.UUID
	Tenant    string
	Users     []string
	// NotBefore: sessions issued at or before it are revoked. Zero, for
	// one user only, means the user's watermark as the transaction stored
	// it, which the command then need not read back.
	NotBefore time.Time
	Cause     string
	Reason    string
}

// Queue queues, in the command's batch b, the marking of l's sessions, the
// recording of its targets and their entries in the tenant's session feed:
// one statement, whose feed insert takes the targets from the insert's
// RETURNING instead of reading operation_targets back. The read back was a
// statement more a command, and planned with statistics taken while the
// table was empty it scanned the table whole, longer as it grew
// (docs/benchmarks.md, item 47).
func Queue(b *pgx.Batch, l Logout) {
	// One user, most commands, gets a statement of its own: PostgreSQL
	// planned the one over an array anew on every execution (its generic
	// plan, for arrays of any length, never looked cheaper than the plan
	// for one user), which took longer than running it: 160 µs a command.
	switch {
	case l.NotBefore.IsZero():
		if len(l.Users) != 1 {
			panic("targets: a Logout without NotBefore must be of one user")
		}
		b.Queue(markOneStoredSQL, l.Tenant, l.Users[0], l.Cause, l.Reason, l.Operation)
	case len(l.Users) == 1:
		b.Queue(markOneSQL, l.Tenant, l.Users[0], l.Cause, l.Reason, l.Operation, l.NotBefore)
	default:
		b.Queue(markSQL, l.Tenant, l.Users, l.Cause, l.Reason, l.Operation, l.NotBefore)
	}
}

// markSQL marks the live sessions of users $2 (an array), issued at or
// before $6, revoked by operation $5, records them as its targets and
// appends them to the feed; markOneSQL does it for one user $2, and
// markOneStoredSQL for one user $2 up to the user's stored watermark.
var (
	markSQL          = mark("FROM unnest($2::text[]) AS w(u)", "w.u", "$6")
	markOneSQL       = mark("", "$2", "$6")
	markOneStoredSQL = mark("", "$2", "(SELECT not_before FROM user_watermarks WHERE tenant_id = $1 AND user_id = $2)")
)

// mark is the statement of markSQL with its users joined by from and
// matched by user, up to the watermark notBefore.
func mark(from, user, notBefore string) string {
	return `WITH rev AS (
		UPDATE sessions s SET revoked_at = ` + notBefore + `, revoke_cause = $3, revoke_reason = nullif($4, ''), revoke_operation = $5
		` + from + `
		WHERE s.tenant_id = $1 AND s.user_id = ` + user + ` AND s.issued_at <= ` + notBefore + `
		  AND s.revoked_at IS NULL AND s.ended_at IS NULL
		RETURNING s.session_id, s.user_id, s.client, s.holder, s.device_id),
	tgt AS (
		INSERT INTO operation_targets (operation_id, tenant_id, session_id, user_id, client, holder, device_id)
		SELECT $5, $1, session_id, user_id, client, holder, device_id FROM rev
		RETURNING session_id, user_id)
	INSERT INTO session_changes (tenant_id, user_id, session_id, kind, detail)
	SELECT $1, user_id, session_id, 'revoked', jsonb_build_object('operation_id', $5::text, 'cause', $3::text)
	FROM tgt`
}

// Defer queues, in the command's batch, l as a pending_targets row for
// Record to do after the commit.
func Defer(b *pgx.Batch, l Logout) {
	b.Queue(`INSERT INTO pending_targets (operation_id, tenant_id, users, not_before, cause, reason)
		VALUES ($1, $2, $3, $4, $5, nullif($6, ''))`,
		l.Operation, l.Tenant, l.Users, l.NotBefore, l.Cause, l.Reason)
}

// Record does the pending work of operation op, Slice users per
// transaction, and returns when none is left. Another process working on
// the same row is not waited for: each slice is taken under the row's lock
// and skipped while someone else holds it. Each slice hints the tenant's
// live views through w.
func Record(ctx context.Context, pool *pgxpool.Pool, w *wake.Hub, op uuid.UUID) error {
	for {
		more, err := recordSlice(ctx, pool, w, op)
		if err != nil || !more {
			return err
		}
	}
}

// recordSlice records the next slice of op's users; more is false when
// the row is gone or taken.
func recordSlice(ctx context.Context, pool *pgxpool.Pool, w *wake.Hub, op uuid.UUID) (more bool, err error) {
	var tenant string
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var l Logout
		var done, total int
		var reason *string
		err := tx.QueryRow(ctx, `SELECT tenant_id, users[done + 1 : done + $2], done, cardinality(users), not_before, cause, reason
			FROM pending_targets WHERE operation_id = $1 FOR UPDATE SKIP LOCKED`, op, Slice).
			Scan(&l.Tenant, &l.Users, &done, &total, &l.NotBefore, &l.Cause, &reason)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		l.Operation = op
		if reason != nil {
			l.Reason = *reason
		}
		b := &pgx.Batch{}
		Queue(b, l)
		if done+len(l.Users) >= total {
			b.Queue("DELETE FROM pending_targets WHERE operation_id = $1", op)
		} else {
			b.Queue("UPDATE pending_targets SET done = $2 WHERE operation_id = $1", op, done+len(l.Users))
			more = true
		}
		tenant = l.Tenant
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return false, fmt.Errorf("targets: record %s: %w", op, err)
	}
	if tenant != "" {
		w.Sessions(tenant)
	}
	return more, nil
}

// RecordAll records every operation's pending work that nobody is doing,
// oldest first: what a crash left.
func RecordAll(ctx context.Context, pool *pgxpool.Pool, w *wake.Hub) error {
	rows, err := pool.Query(ctx, "SELECT operation_id FROM pending_targets ORDER BY created_at")
	if err != nil {
		return fmt.Errorf("targets: pending: %w", err)
	}
	ops, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return fmt.Errorf("targets: pending: %w", err)
	}
	for _, op := range ops {
		if err := Record(ctx, pool, w, op); err != nil {
			return err
		}
	}
	return nil
}
