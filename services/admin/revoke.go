package admin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/changes"
)

// revokeUsers raises the not-before watermark of each user to now and emits
// one state event per user. users must be valid, sorted and unique: the
// sorted order makes concurrent bulk commands lock rows in the same order,
// so they cannot deadlock.
func revokeUsers(ctx context.Context, tx cmdQuerier, o *op, users []string, cause, group string) error {
	if len(users) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, `INSERT INTO user_watermarks AS w (tenant_id, user_id, not_before, operation_id, cause, reason)
		SELECT $1, u, clock_timestamp(), $3, $4, nullif($5, '') FROM unnest($2::text[]) WITH ORDINALITY AS t(u, n) ORDER BY n
		ON CONFLICT (tenant_id, user_id) DO UPDATE
		SET not_before = greatest(w.not_before, excluded.not_before),
		    operation_id = excluded.operation_id, cause = excluded.cause, reason = excluded.reason
		RETURNING user_id, not_before`,
		o.tenant, users, o.id, cause, o.reason)
	if err != nil {
		return fmt.Errorf("admin: revoke users: %w", err)
	}
	defer rows.Close()
	var user string
	var nb time.Time
	var revokedUsers []string
	var nbs []time.Time
	_, err = pgx.ForEachRow(rows, []any{&user, &nb}, func() error {
		revokedUsers, nbs = append(revokedUsers, user), append(nbs, nb)
		subject, err := events.UserStateSubject(o.tenant, user)
		if err != nil {
			return err
		}
		return emit(o, subject, events.TypeUserRevoked, "users/"+user, nb, events.UserRevoked{
			Tenant: o.tenant, User: user, NotBefore: nb, OperationID: o.id.String(),
			Cause: cause, Group: group, Reason: o.reason,
		})
	})
	if err != nil {
		return fmt.Errorf("admin: revoke users: %w", err)
	}
	// Mark the users' registered sessions revoked and remember them as the
	// operation's targets; the live session views get them from there.
	o.later.Queue(`WITH rev AS (
			UPDATE sessions s SET revoked_at = w.nb, revoke_cause = $3, revoke_reason = nullif($4, ''), revoke_operation = $5
			FROM unnest($2::text[], $6::timestamptz[]) AS w(u, nb)
			WHERE s.tenant_id = $1 AND s.user_id = w.u AND s.issued_at <= w.nb
			  AND s.revoked_at IS NULL AND s.ended_at IS NULL
			RETURNING s.session_id, s.user_id, s.client, s.holder, s.device_id)
		INSERT INTO operation_targets (operation_id, tenant_id, session_id, user_id, client, holder, device_id)
		SELECT $5, $1, session_id, user_id, client, holder, device_id FROM rev`,
		o.tenant, revokedUsers, cause, o.reason, o.id, nbs)
	changes.QueueLock(&o.feed, o.tenant)
	o.feed.Queue(`INSERT INTO session_changes (tenant_id, user_id, session_id, kind, detail)
		SELECT $1, t.user_id, t.session_id, 'revoked', jsonb_build_object('operation_id', $5::text, 'cause', $3::text)
		FROM operation_targets t JOIN unnest($4::text[]) AS u(id) ON t.user_id = u.id
		WHERE t.operation_id = $2`,
		o.tenant, o.id, cause, revokedUsers, o.id.String())
	o.addUsers(users)
	return nil
}

// revokeTenant raises the tenant's not-before watermark: one row and one
// event, whatever the tenant's size.
func revokeTenant(ctx context.Context, tx cmdQuerier, o *op) error {
	var nb time.Time
	err := tx.QueryRow(ctx, `UPDATE tenants SET
		not_before = greatest(not_before, clock_timestamp()),
		not_before_operation = $2, not_before_cause = $3, not_before_reason = nullif($4, '')
		WHERE id = $1 RETURNING not_before`,
		o.tenant, o.id, events.CauseTenantLogout, o.reason).Scan(&nb)
	if err != nil {
		return fmt.Errorf("admin: revoke tenant: %w", err)
	}
	subject, err := events.TenantStateSubject(o.tenant)
	if err != nil {
		return err
	}
	o.targets.Tenant = true
	// One change for the whole tenant: its sessions are not touched one by one.
	if err := changes.Queue(&o.feed, o.tenant, "", "", changes.TenantRevoked, map[string]any{"operation_id": o.id.String()}); err != nil {
		return err
	}
	return emit(o, subject, events.TypeTenantRevoked, "tenant", nb, events.TenantRevoked{
		Tenant: o.tenant, NotBefore: nb, OperationID: o.id.String(), Cause: events.CauseTenantLogout, Reason: o.reason,
	})
}

// revokeSession marks one registered session revoked and emits its state
// event. found is false when the tenant has no such session.
func revokeSession(ctx context.Context, tx cmdQuerier, o *op, session, cause string, end bool) (found bool, err error) {
	var user string
	var at time.Time
	err = tx.QueryRow(ctx, `UPDATE sessions SET
		revoked_at = coalesce(revoked_at, clock_timestamp()),
		revoke_cause = coalesce(revoke_cause, $3),
		revoke_reason = coalesce(revoke_reason, nullif($4, '')),
		revoke_operation = coalesce(revoke_operation, $5),
		ended_at = CASE WHEN $6 THEN coalesce(ended_at, clock_timestamp()) ELSE ended_at END
		WHERE tenant_id = $1 AND session_id = $2
		RETURNING user_id, revoked_at`,
		o.tenant, session, cause, o.reason, o.id, end).Scan(&user, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("admin: revoke session: %w", err)
	}
	subject, err := events.SessionStateSubject(o.tenant, session)
	if err != nil {
		return false, err
	}
	o.targets.Sessions = append(o.targets.Sessions, session)
	o.later.Queue(`INSERT INTO operation_targets (operation_id, tenant_id, session_id, user_id, client, holder, device_id)
		SELECT $1, tenant_id, session_id, user_id, client, holder, device_id FROM sessions WHERE tenant_id = $2 AND session_id = $3
		ON CONFLICT DO NOTHING`, o.id, o.tenant, session)
	kind := changes.Revoked
	if end {
		kind = changes.Ended
	}
	if err := changes.Queue(&o.feed, o.tenant, user, session, kind, map[string]any{"operation_id": o.id.String(), "cause": cause}); err != nil {
		return false, err
	}
	return true, emit(o, subject, events.TypeSessionRevoked, "sessions/"+session, at, events.SessionRevoked{
		Tenant: o.tenant, Session: session, User: user, RevokedAt: at, OperationID: o.id.String(),
		Cause: cause, Reason: o.reason,
	})
}

// checkUsers validates, sorts and de-duplicates a list of user ids.
func (s *Server) checkUsers(users []string) ([]string, error) {
	if len(users) > s.maxBulk {
		return nil, errorf(413, CodeBodyTooLarge, "%d users in one command; at most %d", len(users), s.maxBulk)
	}
	for i, u := range users {
		if err := events.CheckID(fmt.Sprintf("users[%d]", i), u); err != nil {
			return nil, err
		}
	}
	out := slices.Clone(users)
	slices.Sort(out)
	return slices.Compact(out), nil
}
