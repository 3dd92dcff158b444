package admin

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// auditEntry is one row of the append-only audit log, with the outcome of
// its operation.
type auditEntry struct {
	ID          int64           `json:"id"`
	At          time.Time       `json:"at"`
	Actor       string          `json:"actor"`
	SourceIP    *string         `json:"source_ip,omitempty"`
	Action      string          `json:"action"`
	Reason      *string         `json:"reason,omitempty"`
	OperationID *string         `json:"operation_id,omitempty"`
	Targets     json.RawMessage `json:"targets"`
	// Outcome: accepted (events not all published yet), published, or
	// completed (enforced everywhere), with the completion time.
	Outcome     *string    `json:"outcome,omitempty"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
}

// listAudit pages through a tenant's audit log, newest first, filtered by
// action, actor, operation and time range; ?before=<id> continues a walk.
func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant")
	if err != nil {
		return err
	}
	if err := s.tenantExists(r.Context(), ids[0]); err != nil {
		return err
	}
	q := r.URL.Query()
	limit := 100
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 1000 {
			return errorf(http.StatusBadRequest, CodeBadRequest, "limit: want 1 to 1000")
		}
	}
	var before int64
	if v := q.Get("before"); v != "" {
		if before, err = strconv.ParseInt(v, 10, 64); err != nil || before < 1 {
			return errorf(http.StatusBadRequest, CodeBadRequest, "before: want an audit entry id")
		}
	}
	var since, until *time.Time
	for name, dst := range map[string]**time.Time{"since": &since, "until": &until} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return errorf(http.StatusBadRequest, CodeBadRequest, "%s: want an RFC 3339 time", name)
			}
			*dst = &t
		}
	}
	for _, name := range []string{"action", "actor", "operation_id"} {
		if len(q.Get(name)) > 256 {
			return errorf(http.StatusBadRequest, CodeBadRequest, "%s is too long", name)
		}
	}
	rows, err := s.pool.Query(r.Context(), `SELECT a.id, a.at, a.actor, a.source_ip, a.action, a.reason, a.operation_id::text, a.detail,
			CASE WHEN o.id IS NULL THEN NULL WHEN o.completed_at IS NOT NULL THEN 'completed'
			     WHEN o.published_at IS NOT NULL THEN 'published' ELSE 'accepted' END,
			o.completed_at
		FROM audit_log a LEFT JOIN operations o ON o.id = a.operation_id
		WHERE a.tenant_id = $1 AND ($2 = 0 OR a.id < $2)
		  AND ($3 = '' OR a.action = $3) AND ($4 = '' OR a.actor = $4) AND ($5 = '' OR a.operation_id::text = $5)
		  AND ($6::timestamptz IS NULL OR a.at >= $6) AND ($7::timestamptz IS NULL OR a.at < $7)
		ORDER BY a.id DESC LIMIT $8`,
		ids[0], before, q.Get("action"), q.Get("actor"), q.Get("operation_id"), since, until, limit+1)
	if err != nil {
		return err
	}
	entries, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (e auditEntry, err error) {
		err = row.Scan(&e.ID, &e.At, &e.Actor, &e.SourceIP, &e.Action, &e.Reason, &e.OperationID, &e.Targets, &e.Outcome, &e.CompletedAt)
		return e, err
	})
	if err != nil {
		return err
	}
	out := map[string]any{"tenant": ids[0]}
	if len(entries) > limit {
		entries = entries[:limit]
		out["next_before"] = entries[len(entries)-1].ID
	}
	if entries == nil {
		entries = []auditEntry{}
	}
	out["entries"] = entries
	return writeCacheable(w, r, out)
}
