package admin

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/evict-dev/evict/events"
)

// pathIDs reads and checks identifiers from the request path. Path values
// are already percent-decoded, so "%2E" arrives as "." and is refused.
func pathIDs(r *http.Request, names ...string) ([]string, error) {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = r.PathValue(n)
		if err := events.CheckID(n, out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

type reasonBody struct {
	Reason string `json:"reason"`
}

// tenantBody is the body of GET and PUT /v1/tenants/{tenant}.
type tenantBody struct {
	ID        string     `json:"id"`
	CreatedAt time.Time  `json:"created_at"`
	NotBefore *time.Time `json:"not_before,omitempty"`
}

func (s *Server) putTenant(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant")
	if err != nil {
		return err
	}
	var t tenantBody
	var created bool
	err = s.inTx(r.Context(), func(ctx context.Context, tx pgx.Tx) error {
		// The no-op update makes the row come back whether it was inserted
		// now or by a concurrent request; xmax = 0 tells which.
		err := tx.QueryRow(ctx, `INSERT INTO tenants AS t (id) VALUES ($1)
			ON CONFLICT (id) DO UPDATE SET id = t.id
			RETURNING id, created_at, not_before, xmax = 0`, ids[0]).Scan(&t.ID, &t.CreatedAt, &t.NotBefore, &created)
		if err != nil || !created {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO audit_log (tenant_id, actor, source_ip, action) VALUES ($1, $2, $3, 'tenant.create')`,
			t.ID, principalFrom(ctx).name, clientIP(r))
		return err
	})
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, t)
	return nil
}

func (s *Server) getTenant(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant")
	if err != nil {
		return err
	}
	var t tenantBody
	err = s.pool.QueryRow(r.Context(), "SELECT id, created_at, not_before FROM tenants WHERE id = $1", ids[0]).
		Scan(&t.ID, &t.CreatedAt, &t.NotBefore)
	if errors.Is(err, pgx.ErrNoRows) {
		return errorf(http.StatusNotFound, CodeTenantNotFound, "tenant %q does not exist", ids[0])
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}

func (s *Server) addMember(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant", "group", "user")
	if err != nil {
		return err
	}
	var body reasonBody
	if err := s.decodeOptional(w, r, &body); err != nil {
		return err
	}
	tenant, group, user := ids[0], ids[1], ids[2]
	return s.run(w, r, command{kind: "member.add", tenant: tenant, reason: body.Reason, request: ids,
		exec: func(ctx context.Context, tx cmdQuerier, o *op) (map[string]any, error) {
			var at time.Time
			err := tx.QueryRow(ctx, `INSERT INTO group_members (tenant_id, group_id, user_id) VALUES ($1, $2, $3)
				ON CONFLICT DO NOTHING RETURNING added_at`, tenant, group, user).Scan(&at)
			added := err == nil
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return nil, err
			}
			o.targets.Group = group
			if added {
				o.targets.UsersAdded = 1
				if err := emitHistory(o, events.TypeMemberAdded, "users/"+user, at, events.Membership{
					Tenant: tenant, Group: group, User: user, OperationID: o.id.String(), Reason: o.reason,
				}); err != nil {
					return nil, err
				}
			}
			out := []string{}
			if added {
				out = append(out, user)
			}
			return map[string]any{"added": out}, nil
		}})
}

func (s *Server) removeMember(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant", "group", "user")
	if err != nil {
		return err
	}
	var body reasonBody
	if err := s.decodeOptional(w, r, &body); err != nil {
		return err
	}
	tenant, group, user := ids[0], ids[1], ids[2]
	return s.run(w, r, command{kind: "member.remove", tenant: tenant, reason: body.Reason, request: ids,
		exec: func(ctx context.Context, tx cmdQuerier, o *op) (map[string]any, error) {
			tag, err := tx.Exec(ctx, `DELETE FROM group_members WHERE tenant_id = $1 AND group_id = $2 AND user_id = $3`,
				tenant, group, user)
			if err != nil {
				return nil, err
			}
			if tag.RowsAffected() == 0 {
				return nil, errorf(http.StatusNotFound, CodeMemberNotFound, "user %q is not a member of group %q", user, group)
			}
			o.targets.Group = group
			if err := revokeUsers(ctx, tx, o, []string{user}, events.CauseMemberRemoved, group); err != nil {
				return nil, err
			}
			return nil, emitHistory(o, events.TypeMemberRemoved, "users/"+user, time.Now(), events.Membership{
				Tenant: tenant, Group: group, User: user, OperationID: o.id.String(), Reason: o.reason,
			})
		}})
}

type setMembersBody struct {
	Users  []string `json:"users"`
	Reason string   `json:"reason"`
}

// setMembers replaces a group's membership, as a directory sync does; every
// user dropped from the group is logged out.
func (s *Server) setMembers(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant", "group")
	if err != nil {
		return err
	}
	var body setMembersBody
	if err := s.decode(w, r, &body); err != nil {
		return err
	}
	if body.Users == nil {
		return errorf(http.StatusBadRequest, CodeBadRequest, `"users" is required (an empty list removes every member)`)
	}
	users, err := s.checkUsers(body.Users)
	if err != nil {
		return err
	}
	tenant, group := ids[0], ids[1]
	return s.run(w, r, command{kind: "members.set", tenant: tenant, reason: body.Reason, request: []any{group, users},
		exec: func(ctx context.Context, tx cmdQuerier, o *op) (map[string]any, error) {
			// Two syncs of one group must not interleave their diffs.
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))", tenant, group); err != nil {
				return nil, err
			}
			removed, err := collect(ctx, tx, `DELETE FROM group_members WHERE tenant_id = $1 AND group_id = $2
				AND NOT (user_id = ANY($3)) RETURNING user_id`, tenant, group, users)
			if err != nil {
				return nil, err
			}
			added, err := collect(ctx, tx, `INSERT INTO group_members (tenant_id, group_id, user_id)
				SELECT $1, $2, u FROM unnest($3::text[]) AS u ON CONFLICT DO NOTHING RETURNING user_id`, tenant, group, users)
			if err != nil {
				return nil, err
			}
			slices.Sort(removed)
			slices.Sort(added)
			o.targets.Group = group
			o.targets.UsersAdded = len(added)
			o.targets.UsersKept = len(users) - len(added)
			if err := revokeUsers(ctx, tx, o, removed, events.CauseMemberRemoved, group); err != nil {
				return nil, err
			}
			now := time.Now()
			for _, u := range added {
				if err := emitHistory(o, events.TypeMemberAdded, "users/"+u, now, events.Membership{
					Tenant: tenant, Group: group, User: u, OperationID: o.id.String(), Reason: o.reason}); err != nil {
					return nil, err
				}
			}
			for _, u := range removed {
				if err := emitHistory(o, events.TypeMemberRemoved, "users/"+u, now, events.Membership{
					Tenant: tenant, Group: group, User: u, OperationID: o.id.String(), Reason: o.reason}); err != nil {
					return nil, err
				}
			}
			return map[string]any{"added": nonNil(added), "removed": nonNil(removed)}, nil
		}})
}

func (s *Server) listMembers(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant", "group")
	if err != nil {
		return err
	}
	if err := s.tenantExists(r.Context(), ids[0]); err != nil {
		return err
	}
	users, err := collect(r.Context(), s.pool, `SELECT user_id FROM group_members WHERE tenant_id = $1 AND group_id = $2 ORDER BY user_id`, ids[0], ids[1])
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"tenant": ids[0], "group": ids[1], "users": nonNil(users)})
	return nil
}

func (s *Server) logoutUser(w http.ResponseWriter, r *http.Request) error {
	return s.revokeUserCommand(w, r, "user.logout", events.CauseLogout)
}

func (s *Server) accessChanged(w http.ResponseWriter, r *http.Request) error {
	return s.revokeUserCommand(w, r, "user.access_changed", events.CauseAccessChanged)
}

func (s *Server) revokeUserCommand(w http.ResponseWriter, r *http.Request, kind, cause string) error {
	ids, err := pathIDs(r, "tenant", "user")
	if err != nil {
		return err
	}
	var body reasonBody
	if err := s.decodeOptional(w, r, &body); err != nil {
		return err
	}
	tenant, user := ids[0], ids[1]
	return s.run(w, r, command{kind: kind, tenant: tenant, reason: body.Reason, request: ids, lockKey: user,
		exec: func(ctx context.Context, tx cmdQuerier, o *op) (map[string]any, error) {
			if err := revokeUsers(ctx, tx, o, []string{user}, cause, ""); err != nil {
				return nil, err
			}
			if cause == events.CauseAccessChanged {
				return nil, emitHistory(o, events.TypeAccessChanged, "users/"+user, time.Now(), events.AccessChanged{
					Tenant: tenant, User: user, OperationID: o.id.String(), Reason: o.reason})
			}
			return nil, nil
		}})
}

func (s *Server) logoutSession(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant", "session")
	if err != nil {
		return err
	}
	var body reasonBody
	if err := s.decodeOptional(w, r, &body); err != nil {
		return err
	}
	return s.run(w, r, command{kind: "session.logout", tenant: ids[0], reason: body.Reason, request: ids,
		exec: func(ctx context.Context, tx cmdQuerier, o *op) (map[string]any, error) {
			found, err := revokeSession(ctx, tx, o, ids[1], events.CauseLogout, false)
			if err == nil && !found {
				err = errorf(http.StatusNotFound, CodeSessionNotFound, "session %q is not registered in tenant %q", ids[1], ids[0])
			}
			return nil, err
		}})
}

type bulkLogoutBody struct {
	Users  []string `json:"users"`
	All    bool     `json:"all"`
	Reason string   `json:"reason"`
}

func (s *Server) logoutTenant(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant")
	if err != nil {
		return err
	}
	var body bulkLogoutBody
	if err := s.decode(w, r, &body); err != nil {
		return err
	}
	switch {
	case body.All && body.Users != nil:
		return errorf(http.StatusBadRequest, CodeBadRequest, `give either "users" or "all": true, not both`)
	case body.All:
		return s.run(w, r, command{kind: "tenant.logout", tenant: ids[0], reason: body.Reason, request: "all",
			exec: func(ctx context.Context, tx cmdQuerier, o *op) (map[string]any, error) {
				return nil, revokeTenant(ctx, tx, o)
			}})
	case len(body.Users) == 0:
		return errorf(http.StatusBadRequest, CodeBadRequest, `give "users" (a non-empty list) or "all": true`)
	}
	users, err := s.checkUsers(body.Users)
	if err != nil {
		return err
	}
	return s.run(w, r, command{kind: "users.logout", tenant: ids[0], reason: body.Reason, request: users,
		exec: func(ctx context.Context, tx cmdQuerier, o *op) (map[string]any, error) {
			return nil, revokeUsers(ctx, tx, o, users, events.CauseLogout, "")
		}})
}

func (s *Server) tenantExists(ctx context.Context, tenant string) error {
	var one int
	err := s.pool.QueryRow(ctx, "SELECT 1 FROM tenants WHERE id = $1", tenant).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return errorf(http.StatusNotFound, CodeTenantNotFound, "tenant %q does not exist", tenant)
	}
	return err
}

// querier is what collect needs of a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// collect runs a query that returns one text column.
func collect(ctx context.Context, q querier, sql string, args ...any) ([]string, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
