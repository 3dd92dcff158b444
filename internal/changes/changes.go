// Package changes appends to the per-tenant feed of session changes that
// live views stream (Server-Sent Events with Last-Event-ID resume). Writers
// append inside the transaction of the change itself.
package changes

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
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

// Lock serializes, until commit, the transactions that append to a
// tenant's feed. Feed ids then follow commit order within the tenant, which
// is what lets a stream resume after the last id it sent without skipping a
// change committed late with a smaller id.
func Lock(ctx context.Context, tx pgx.Tx, tenant string) error {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended('evict-changes/' || $1, 0))", tenant); err != nil {
		return fmt.Errorf("changes: lock feed: %w", err)
	}
	return nil
}

// Notify wakes the streams of tenant at commit.
func Notify(ctx context.Context, tx pgx.Tx, tenant string) error {
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", Channel, tenant); err != nil {
		return fmt.Errorf("changes: notify: %w", err)
	}
	return nil
}

// Record appends one change and wakes the tenant's streams at commit.
func Record(ctx context.Context, tx pgx.Tx, tenant, user, session, kind string, detail map[string]any) error {
	if detail == nil {
		detail = map[string]any{}
	}
	b, err := json.Marshal(detail)
	if err != nil {
		return err
	}
	if err := Lock(ctx, tx, tenant); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO session_changes (tenant_id, user_id, session_id, kind, detail) VALUES ($1, $2, $3, $4, $5)`,
		tenant, user, session, kind, b); err != nil {
		return fmt.Errorf("changes: record: %w", err)
	}
	return Notify(ctx, tx, tenant)
}
