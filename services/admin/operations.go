package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/evict-dev/evict/services/registry"
)

// operationView is the body of GET /v1/operations/{id}.
type operationView struct {
	ID          string     `json:"operation_id"`
	Tenant      string     `json:"tenant"`
	Kind        string     `json:"kind"`
	Actor       string     `json:"actor"`
	Reason      *string    `json:"reason,omitempty"`
	AcceptedAt  time.Time  `json:"accepted_at"`
	PublishedAt *time.Time `json:"published_at,omitempty"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
	// CompletionSeconds is the time from acceptance to completion.
	CompletionSeconds *float64        `json:"completion_seconds,omitempty"`
	Request           json.RawMessage `json:"request"`
	Events            struct {
		Total   int `json:"total"`
		Pending int `json:"pending"`
	} `json:"events"`
	// Status is "publishing" while some of the operation's events are still
	// in the outbox and "published" once JetStream holds all of them.
	Status string `json:"status"`
	// enforcement adds summary, counts, targets and guards.
	enforcement
}

// enforcement is registry.Status, embedded under a name that does not clash
// with Status.
type enforcement = registry.Status

// maxWait bounds ?wait=.
const maxWait = 60 * time.Second

// getOperation answers what an operation did and whether it is enforced
// everywhere. With ?wait=10s it long-polls until the summary is completed
// or the wait runs out.
func (s *Server) getOperation(w http.ResponseWriter, r *http.Request) error {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return errorf(http.StatusBadRequest, CodeBadRequest, "operation id %q is not a UUID", r.PathValue("id"))
	}
	var wait time.Duration
	if q := r.URL.Query().Get("wait"); q != "" {
		if wait, err = time.ParseDuration(q); err != nil || wait < 0 || wait > maxWait {
			return errorf(http.StatusBadRequest, CodeBadRequest, "wait=%q: want a duration up to %s, such as 10s", q, maxWait)
		}
	}
	deadline := time.Now().Add(wait)
	if wait > 0 {
		// The long poll may outlast the server's write timeout.
		_ = http.NewResponseController(w).SetWriteDeadline(deadline.Add(30 * time.Second))
	}
	for {
		changed := s.registry.Changed()
		v, err := s.loadOperation(r, id)
		if err != nil {
			return err
		}
		if v.Summary == registry.SummaryCompleted || !time.Now().Before(deadline) {
			writeJSON(w, http.StatusOK, v)
			return nil
		}
		select {
		case <-r.Context().Done():
			return nil // the client left; nothing to answer
		case <-changed:
		case <-time.After(time.Until(deadline)):
		}
	}
}

func (s *Server) loadOperation(r *http.Request, id uuid.UUID) (operationView, error) {
	var v operationView
	err := s.pool.QueryRow(r.Context(), `SELECT o.id::text, o.tenant_id, o.kind, o.actor, o.reason, o.accepted_at,
			o.published_at, o.completed_at, o.targets, o.event_count,
			CASE WHEN o.published_at IS NULL THEN o.event_count - o.published_events ELSE 0 END
		FROM operations o WHERE o.id = $1`, id).Scan(
		&v.ID, &v.Tenant, &v.Kind, &v.Actor, &v.Reason, &v.AcceptedAt, &v.PublishedAt, &v.CompletedAt,
		&v.Request, &v.Events.Total, &v.Events.Pending)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && !principalFrom(r.Context()).allows(v.Tenant)) {
		// Another tenant's operation is as unknown as a missing one.
		return v, errorf(http.StatusNotFound, CodeOperationNotFound, "operation %s does not exist", id)
	}
	if err != nil {
		return v, err
	}
	v.Status = "published"
	if v.Events.Pending > 0 {
		v.Status = "publishing"
	}
	if v.enforcement, err = s.registry.Operation(r.Context(), id); err != nil {
		return v, err
	}
	if v.CompletedAt != nil {
		secs := v.CompletedAt.Sub(v.AcceptedAt).Seconds()
		v.CompletionSeconds = &secs
	}
	return v, nil
}
