package admin

import (
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// deadLetter is a push that will not be retried: refused for good
// ("failed") or out of retries ("dead").
type deadLetter struct {
	EventID     string    `json:"event_id"`
	OperationID *string   `json:"operation_id,omitempty"`
	SessionID   string    `json:"session_id"`
	UserID      string    `json:"user_id"`
	Provider    string    `json:"provider"`
	Status      string    `json:"status"`
	Attempts    int       `json:"attempts"`
	LastError   *string   `json:"last_error,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// listDeadLetters pages through a tenant's pushes that exhausted their
// retries or were refused for good, newest first; ?before=<created_at
// RFC 3339> continues a walk.
func (s *Server) listDeadLetters(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant")
	if err != nil {
		return err
	}
	if err := s.tenantExists(r.Context(), ids[0]); err != nil {
		return err
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 1000 {
			return errorf(http.StatusBadRequest, CodeBadRequest, "limit: want 1 to 1000")
		}
	}
	var before *time.Time
	if v := r.URL.Query().Get("before"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return errorf(http.StatusBadRequest, CodeBadRequest, "before: want an RFC 3339 time")
		}
		before = &t
	}
	rows, err := s.pool.Query(r.Context(), `SELECT event_id::text, operation_id::text, session_id, user_id, provider, status,
			attempts, last_error, created_at
		FROM push_deliveries
		WHERE tenant_id = $1 AND status IN ('failed', 'dead') AND ($2::timestamptz IS NULL OR created_at < $2)
		ORDER BY created_at DESC LIMIT $3`, ids[0], before, limit+1)
	if err != nil {
		return err
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (d deadLetter, err error) {
		err = row.Scan(&d.EventID, &d.OperationID, &d.SessionID, &d.UserID, &d.Provider, &d.Status, &d.Attempts, &d.LastError, &d.CreatedAt)
		return d, err
	})
	if err != nil {
		return err
	}
	out := map[string]any{"tenant": ids[0]}
	if len(list) > limit {
		list = list[:limit]
		out["next_before"] = list[len(list)-1].CreatedAt.Format(time.RFC3339Nano)
	}
	if list == nil {
		list = []deadLetter{}
	}
	out["dead_letters"] = list
	return writeCacheable(w, r, out)
}
