// Package changes appends to the per-tenant feed of session changes that
// live views stream (Server-Sent Events with Last-Event-ID resume). Writers
// append inside the transaction of the change itself, and wake the streams
// with Notify once it has committed.
package changes

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Channel is notified, with the tenant id as payload, after a change.
const Channel = "evict_session_changes"

// Kinds of changes.
const (
	Started       = "started"
	Seen          = "seen"
	Revoked       = "revoked"
	Ended         = "ended"
	Deferred      = "deferred"
	Terminated    = "terminated"
	TenantRevoked = "tenant_revoked"
)

// Queue queues, in a batch sent inside the transaction, the append of one
// change. The feed is read in transaction order (see the admin API's
// stream), so appending takes no lock.
func Queue(b *pgx.Batch, tenant, user, session, kind string, detail map[string]any) error {
	if detail == nil {
		detail = map[string]any{}
	}
	d, err := json.Marshal(detail)
	if err != nil {
		return fmt.Errorf("changes: %w", err)
	}
	b.Queue(`INSERT INTO session_changes (tenant_id, user_id, session_id, kind, detail) VALUES ($1, $2, $3, $4, $5)`,
		tenant, user, session, kind, d)
	return nil
}

// Execer runs a statement: a pool or a connection, outside any transaction.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Notify wakes the streams of each tenant. Call it after the changes
// committed, not inside their transaction: a NOTIFY inside a transaction
// holds PostgreSQL's cluster-wide notify lock through the commit's WAL
// flush, which queues the commits of every tenant behind one another. A
// wake lost to a crash right after a commit only delays the change: the
// streams look every 15 seconds anyway.
func Notify(ctx context.Context, db Execer, tenants ...string) error {
	for _, t := range tenants {
		if _, err := db.Exec(ctx, "SELECT pg_notify($1, $2)", Channel, t); err != nil {
			return fmt.Errorf("changes: notify: %w", err)
		}
	}
	return nil
}

// Record appends one change; wake the tenant's streams with Notify after
// the commit.
func Record(ctx context.Context, tx pgx.Tx, tenant, user, session, kind string, detail map[string]any) error {
	var b pgx.Batch
	if err := Queue(&b, tenant, user, session, kind, detail); err != nil {
		return err
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("changes: record: %w", err)
	}
	return nil
}
