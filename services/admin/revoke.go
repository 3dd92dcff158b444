package admin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/changes"
	optargets "github.com/evict-dev/evict/internal/targets"
)

// revokeUsers raises the not-before watermark of each user to now. users
// must be valid, sorted and unique: the sorted order makes concurrent bulk
// commands lock rows in the same order, so they cannot deadlock.
//
// One user gets a user.revoked event of their own, on the user's subject.
// More get users.revoked events of up to events.MaxUsersPerEvent users
// each, with one watermark for all: every guard reads one message per
// thousand users instead of one per user. Their sessions are marked
// revoked in this transaction up to optargets.Inline users, and after the
// commit above it (see internal/targets).
func revokeUsers(ctx context.Context, tx cmdQuerier, o *op, users []string, cause, group string) error {
	switch len(users) {
	case 0:
		return nil
	case 1:
		return revokeUser(o, users[0], cause, group)
	}
	var nb time.Time
	// The watermark is kept where it is already later (greatest): a guard
	// applies the later of a batch's watermark and the user's own.
	err := tx.QueryRow(ctx, `WITH t AS (SELECT clock_timestamp() AS nb),
		up AS (
			INSERT INTO user_watermarks AS w (tenant_id, user_id, not_before, operation_id, cause, reason)
			SELECT $1, u, t.nb, $3, $4, nullif($5, '') FROM t, unnest($2::text[]) WITH ORDINALITY AS x(u, n) ORDER BY n
			ON CONFLICT (tenant_id, user_id) DO UPDATE
			SET not_before = greatest(w.not_before, excluded.not_before),
			    operation_id = excluded.operation_id, cause = excluded.cause, reason = excluded.reason)
		SELECT nb FROM t`,
		o.tenant, users, o.id, cause, o.reason).Scan(&nb)
	if err != nil {
		return fmt.Errorf("admin: revoke users: %w", err)
	}
	for batch := range slices.Chunk(users, events.MaxUsersPerEvent) {
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("admin: event id: %w", err)
		}
		subject, err := events.UsersStateSubject(o.tenant, id.String())
		if err != nil {
			return err
		}
		if err := emitAs(o, id, subject, events.TypeUsersRevoked, "users", nb, events.UsersRevoked{
			Tenant: o.tenant, Users: batch, NotBefore: nb, OperationID: o.id.String(),
			Cause: cause, Group: group, Reason: o.reason,
		}); err != nil {
			return err
		}
	}
	l := optargets.Logout{Operation: o.id, Tenant: o.tenant, Users: users, NotBefore: nb, Cause: cause, Reason: o.reason}
	if len(users) > optargets.Inline {
		optargets.Defer(&o.later, l)
		o.pendingTargets = true
	} else {
		o.markTargets(l)
	}
	o.addUsers(users)
	return nil
}

// revokeUser raises one user's watermark and emits its user.revoked event
// with the watermark as stored.
//
// It reads nothing: the watermark is computed by PostgreSQL, and the
// statements that need it read it from the row, the event's included (see
// storedWatermark). So a command that logs out one user, most of them,
// sends everything, from BEGIN to COMMIT, in one round trip. The second
// round trip it made when it read the watermark back cost both processes
// a write, a read and a wake-up (docs/benchmarks.md, item 33).
func revokeUser(o *op, user, cause, group string) error {
	o.later.Queue(`INSERT INTO user_watermarks AS w (tenant_id, user_id, not_before, operation_id, cause, reason)
		VALUES ($1, $2, clock_timestamp(), $3, $4, nullif($5, ''))
		ON CONFLICT (tenant_id, user_id) DO UPDATE
		SET not_before = greatest(w.not_before, excluded.not_before),
		    operation_id = excluded.operation_id, cause = excluded.cause, reason = excluded.reason`,
		o.tenant, user, o.id, cause, o.reason)
	subject, err := events.UserStateSubject(o.tenant, user)
	if err != nil {
		return err
	}
	if err := emit(o, subject, events.TypeUserRevoked, "users/"+user, storedWatermark, events.UserRevoked{
		Tenant: o.tenant, User: user, NotBefore: storedWatermark, OperationID: o.id.String(),
		Cause: cause, Group: group, Reason: o.reason,
	}); err != nil {
		return err
	}
	o.outbox[len(o.outbox)-1].watermarkOf = user
	// Mark the user's registered sessions revoked and remember them as
	// the operation's targets; the live session views get them from there.
	// A zero NotBefore is the user's watermark as stored.
	o.markTargets(optargets.Logout{Operation: o.id, Tenant: o.tenant, Users: []string{user},
		Cause: cause, Reason: o.reason})
	o.addUsers([]string{user})
	return nil
}

// markTargets queues, before the commit, the marking of l's sessions with
// their targets and feed entries (optargets.Queue), and notes that the
// tenant's live views are to be woken for them.
func (o *op) markTargets(l optargets.Logout) {
	optargets.Queue(&o.later, l)
	o.marks = true
}

// recordTargetsEvery is how often recordTargets looks for pending targets
// that no command handed it: those of a replica that stopped first.
const recordTargetsEvery = 30 * time.Second

// recordTargets records the targets that commands left for after their
// commit (internal/targets): each as soon as its command has committed,
// and at start and every recordTargetsEvery whatever is left.
func (s *Server) recordTargets(ctx context.Context) {
	t := time.NewTicker(recordTargetsEvery)
	defer t.Stop()
	err := optargets.RecordAll(ctx, s.pool, s.wake)
	for {
		if err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "record targets; retrying later", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case op := <-s.pendingTargets:
			err = optargets.Record(ctx, s.pool, s.wake, op)
		case <-t.C:
			err = optargets.RecordAll(ctx, s.pool, s.wake)
		}
	}
}

// revokeTenant raises the tenant's not-before watermark: one row and one
// event, whatever the tenant's size.
func revokeTenant(ctx context.Context, tx cmdQuerier, o *op) error {
	var nb time.Time
	err := tx.QueryRow(ctx, `UPDATE tenants SET
		not_before = greatest(not_before, clock_timestamp()),
		not_before_operation = $2, not_before_cause = $3, not_before_reason = nullif($4, ''),
		not_before_swept = false
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
