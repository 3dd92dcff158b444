package admin

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Kinds of session changes in the live feed.
const (
	changeStarted       = "started"
	changeRevoked       = "revoked"
	changeEnded         = "ended"
	changeTenantRevoked = "tenant_revoked"
)

// recordChange appends a session change to the live feed, in the
// transaction of the change itself.
func recordChange(ctx context.Context, tx pgx.Tx, tenant, user, session, kind string, detail map[string]any) error {
	if detail == nil {
		detail = map[string]any{}
	}
	b, err := json.Marshal(detail)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO session_changes (tenant_id, user_id, session_id, kind, detail) VALUES ($1, $2, $3, $4, $5)`,
		tenant, user, session, kind, b); err != nil {
		return fmt.Errorf("admin: record session change: %w", err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", ChangesChannel, tenant); err != nil {
		return fmt.Errorf("admin: notify session change: %w", err)
	}
	return nil
}

// ChangesChannel is notified with the tenant id after each session change.
const ChangesChannel = "evict_session_changes"
