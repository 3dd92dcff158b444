package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// operationView is the body of GET /v1/operations/{id}.
type operationView struct {
	ID         string          `json:"operation_id"`
	Tenant     string          `json:"tenant"`
	Kind       string          `json:"kind"`
	Actor      string          `json:"actor"`
	Reason     *string         `json:"reason,omitempty"`
	AcceptedAt time.Time       `json:"accepted_at"`
	Targets    json.RawMessage `json:"targets"`
	Events     struct {
		Total   int `json:"total"`
		Pending int `json:"pending"`
	} `json:"events"`
	// Status is "publishing" while some of the operation's events are still
	// in the outbox and "published" once JetStream holds all of them.
	Status string `json:"status"`
}

func (s *Server) getOperation(w http.ResponseWriter, r *http.Request) error {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return errorf(http.StatusBadRequest, CodeBadRequest, "operation id %q is not a UUID", r.PathValue("id"))
	}
	var v operationView
	err = s.pool.QueryRow(r.Context(), `SELECT o.id::text, o.tenant_id, o.kind, o.actor, o.reason, o.accepted_at, o.targets,
			o.event_count, (SELECT count(*) FROM outbox WHERE operation_id = o.id)
		FROM operations o WHERE o.id = $1`, id).Scan(
		&v.ID, &v.Tenant, &v.Kind, &v.Actor, &v.Reason, &v.AcceptedAt, &v.Targets, &v.Events.Total, &v.Events.Pending)
	if errors.Is(err, pgx.ErrNoRows) {
		return errorf(http.StatusNotFound, CodeOperationNotFound, "operation %s does not exist", id)
	}
	if err != nil {
		return err
	}
	v.Status = "published"
	if v.Events.Pending > 0 {
		v.Status = "publishing"
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}
