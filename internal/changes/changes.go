// Package changes appends to the per-tenant feed of session changes that
// live views stream (Server-Sent Events with Last-Event-ID resume). Writers
// append inside the transaction of the change itself, and hint the streams
// (internal/wake) once it has committed.
package changes

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
)

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

// Record appends one change; hint the tenant's streams (wake.Hub.Sessions)
// after the commit.
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
