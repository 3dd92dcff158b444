package admin

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/changes"
)

// clientPattern restricts the client kind: web, mobile, workflow or another
// short lowercase name the holder chooses.
var clientPattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)

// sessionRequest is the body of POST /v1/tenants/{tenant}/sessions.
type sessionRequest struct {
	SessionID string     `json:"session_id"`
	UserID    string     `json:"user_id"`
	Client    string     `json:"client"`
	IssuedAt  *time.Time `json:"issued_at"`
	ExpiresAt *time.Time `json:"expires_at"`
	// Optional descriptive attributes, kept with the session.
	DeviceID      string `json:"device_id,omitempty"`
	Platform      string `json:"platform,omitempty"`
	AppVersion    string `json:"app_version,omitempty"`
	Holder        string `json:"holder,omitempty"`
	IP            string `json:"ip,omitempty"`
	UserAgent     string `json:"user_agent,omitempty"`
	TrustedDevice bool   `json:"trusted_device,omitempty"`
	// Push is where to push the logout (mobile sessions).
	Push *pushTarget `json:"push,omitempty"`
}

// pushTarget is a session's push destination.
type pushTarget struct {
	Provider string `json:"provider"` // apns, fcm or webhook
	Token    string `json:"token"`
	// Topic is the app identity: APNs topic (bundle id) or FCM project;
	// empty uses evictd's configured default.
	Topic string `json:"topic,omitempty"`
}

// maxPushToken bounds push tokens (APNs tokens are 64 hex characters, FCM
// registration tokens about 160).
const maxPushToken = 4096

func (p *pushTarget) check() error {
	switch p.Provider {
	case "apns", "fcm", "webhook":
	default:
		return errorf(http.StatusBadRequest, CodeBadRequest, `push.provider must be "apns", "fcm" or "webhook"`)
	}
	if p.Token == "" || len(p.Token) > maxPushToken || len(p.Topic) > maxAttribute {
		return errorf(http.StatusBadRequest, CodeBadRequest, "push.token must be 1 to %d bytes, push.topic at most %d", maxPushToken, maxAttribute)
	}
	for _, c := range p.Token + p.Topic {
		if c < 0x21 || c > 0x7e {
			return errorf(http.StatusBadRequest, CodeBadRequest, "push.token and push.topic must be printable ASCII without spaces")
		}
	}
	return nil
}

// sessionView is a registered session as the API shows it.
type sessionView struct {
	Tenant string `json:"tenant"`
	// sessionItem is what a listing shows of a live session.
	sessionItem
	RegisteredAt    time.Time  `json:"registered_at"`
	Status          string     `json:"status"`
	EndedAt         *time.Time `json:"ended_at,omitempty"`
	RevokedAt       *time.Time `json:"revoked_at,omitempty"`
	RevokeCause     *string    `json:"revoke_cause,omitempty"`
	RevokeReason    *string    `json:"revoke_reason,omitempty"`
	RevokeOperation *string    `json:"revoke_operation,omitempty"`
	PushProvider    *string    `json:"push_provider,omitempty"`
	Termination     *string    `json:"termination,omitempty"`
	TerminatedAt    *time.Time `json:"terminated_at,omitempty"`
}

const maxAttribute = 512

func (s *Server) registerSession(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant")
	if err != nil {
		return err
	}
	var req sessionRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	if err := events.CheckID("session_id", req.SessionID); err != nil {
		return err
	}
	if err := events.CheckID("user_id", req.UserID); err != nil {
		return err
	}
	if preauthenticated(r) {
		// A guard registers its own sessions: it is their holder.
		req.Holder = strings.TrimPrefix(principalFrom(r.Context()).name, "guard:")
	}
	if req.Holder != "" {
		// The holder names a guard instance; its reports are matched on it.
		if err := events.CheckID("holder", req.Holder); err != nil {
			return err
		}
	}
	var push pushTarget
	if req.Push != nil {
		if err := req.Push.check(); err != nil {
			return err
		}
		push = *req.Push
	}
	if !clientPattern.MatchString(req.Client) {
		return errorf(http.StatusBadRequest, CodeBadRequest, `client must be web, mobile, workflow or another lowercase name matching %s`, clientPattern)
	}
	for name, v := range map[string]string{"device_id": req.DeviceID, "platform": req.Platform, "app_version": req.AppVersion,
		"holder": req.Holder, "ip": req.IP, "user_agent": req.UserAgent} {
		if len(v) > maxAttribute {
			return errorf(http.StatusBadRequest, CodeBadRequest, "%s is longer than %d bytes", name, maxAttribute)
		}
	}
	tenant := ids[0]
	var out sessionView
	var created bool
	err = s.inTx(r.Context(), func(ctx context.Context, tx pgx.Tx) error {
		if err := lockTenant(ctx, tx, tenant); err != nil {
			return err
		}
		// issued_at is evict's clock unless the holder says the session is
		// older: a holder clock that runs ahead must not let a session slip
		// past a logout watermark.
		err := tx.QueryRow(ctx, `INSERT INTO sessions (tenant_id, session_id, user_id, client, issued_at, expires_at,
				holder, device_id, platform, app_version, ip, user_agent, trusted_device, push_provider, push_token, push_topic)
			VALUES ($1, $2, $3, $4, least(coalesce($5, clock_timestamp()), clock_timestamp()), $6,
				nullif($7, ''), nullif($8, ''), nullif($9, ''), nullif($10, ''), nullif($11, ''), nullif($12, ''), $13,
				nullif($14, ''), nullif($15, ''), nullif($16, ''))
			ON CONFLICT DO NOTHING RETURNING true`,
			tenant, req.SessionID, req.UserID, req.Client, req.IssuedAt, req.ExpiresAt,
			req.Holder, req.DeviceID, req.Platform, req.AppVersion, req.IP, req.UserAgent, req.TrustedDevice,
			push.Provider, push.Token, push.Topic).Scan(&created)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		out, err = loadSession(ctx, tx, tenant, req.SessionID)
		if err != nil {
			return err
		}
		if !created {
			if out.UserID != req.UserID || out.Client != req.Client {
				return errorf(http.StatusConflict, CodeConflict, "session %q is already registered for another user or client", req.SessionID)
			}
			if req.Push != nil {
				// Registering again with a push target updates it: tokens rotate.
				if _, err := tx.Exec(ctx, `UPDATE sessions SET push_provider = $3, push_token = $4, push_topic = nullif($5, '')
					WHERE tenant_id = $1 AND session_id = $2`, tenant, req.SessionID, push.Provider, push.Token, push.Topic); err != nil {
					return err
				}
				out.PushProvider = &push.Provider
			}
			return nil
		}
		o := &op{tenant: tenant}
		if err := emitHistory(o, events.TypeSessionRegistered, "sessions/"+req.SessionID, out.RegisteredAt, events.SessionLifecycle{
			Tenant: tenant, Session: req.SessionID, User: req.UserID, Client: req.Client, IssuedAt: out.IssuedAt,
		}); err != nil {
			return err
		}
		if _, err := queueOutbox(&o.later, tenant, uuid.NullUUID{}, o.outbox); err != nil {
			return err
		}
		if err := changes.Queue(&o.later, tenant, req.UserID, req.SessionID, changes.Started, nil); err != nil {
			return err
		}
		return tx.SendBatch(ctx, &o.later).Close()
	})
	if err != nil {
		return err
	}
	if created {
		s.hint(hints{tenant: tenant, outbox: true, sessions: true})
	}
	w.Header().Set("Location", "/v1/tenants/"+tenant+"/sessions/"+req.SessionID)
	if created {
		writeJSON(w, http.StatusCreated, out)
	} else {
		writeJSON(w, http.StatusOK, out)
	}
	return nil
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant", "session")
	if err != nil {
		return err
	}
	out, err := loadSession(r.Context(), s.pool, ids[0], ids[1])
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// endSession ends a session the holder closed (a normal logout). It is
// revoked too, so that a copy of its credential is refused everywhere.
func (s *Server) endSession(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant", "session")
	if err != nil {
		return err
	}
	var body reasonBody
	if err := s.decodeOptional(w, r, &body); err != nil {
		return err
	}
	return s.run(w, r, command{kind: "session.end", tenant: ids[0], reason: body.Reason, request: ids,
		exec: func(ctx context.Context, tx cmdQuerier, o *op) (map[string]any, error) {
			found, err := revokeSession(ctx, tx, o, ids[1], events.CauseSessionEnded, true)
			if err != nil {
				return nil, err
			}
			if !found {
				return nil, errorf(http.StatusNotFound, CodeSessionNotFound, "session %q is not registered in tenant %q", ids[1], ids[0])
			}
			v, err := loadSession(ctx, tx, ids[0], ids[1])
			if err != nil {
				return nil, err
			}
			return nil, emitHistory(o, events.TypeSessionEnded, "sessions/"+ids[1], time.Now(), events.SessionLifecycle{
				Tenant: ids[0], Session: ids[1], User: v.UserID, Client: v.Client, IssuedAt: v.IssuedAt,
			})
		}})
}

type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// loadSession reads a session with its effective status: a session is
// revoked by its own revocation, by its user's watermark or by its tenant's,
// whichever applies; ended and expired come after revoked.
func loadSession(ctx context.Context, q rowQuerier, tenant, session string) (sessionView, error) {
	v := sessionView{Tenant: tenant, sessionItem: sessionItem{SessionID: session}}
	var tenantNB, userNB *time.Time
	var tenantOp, userOp, tenantCause, userCause, tenantReason, userReason *string
	err := q.QueryRow(ctx, `SELECT s.user_id, s.client, s.issued_at, s.registered_at, s.expires_at, s.ended_at,
			s.revoked_at, s.revoke_cause, s.revoke_reason, s.revoke_operation::text,
			s.holder, s.device_id, s.platform, s.app_version, s.ip, s.user_agent, s.trusted_device, s.last_seen_at,
			s.termination, s.terminated_at, s.push_provider,
			t.not_before, t.not_before_operation::text, t.not_before_cause, t.not_before_reason,
			w.not_before, w.operation_id::text, w.cause, w.reason
		FROM sessions s JOIN tenants t ON t.id = s.tenant_id
		LEFT JOIN user_watermarks w ON w.tenant_id = s.tenant_id AND w.user_id = s.user_id
		WHERE s.tenant_id = $1 AND s.session_id = $2`, tenant, session).Scan(
		&v.UserID, &v.Client, &v.IssuedAt, &v.RegisteredAt, &v.ExpiresAt, &v.EndedAt,
		&v.RevokedAt, &v.RevokeCause, &v.RevokeReason, &v.RevokeOperation,
		&v.Holder, &v.DeviceID, &v.Platform, &v.AppVersion, &v.IP, &v.UserAgent, &v.TrustedDevice, &v.LastSeenAt,
		&v.Termination, &v.TerminatedAt, &v.PushProvider,
		&tenantNB, &tenantOp, &tenantCause, &tenantReason,
		&userNB, &userOp, &userCause, &userReason)
	if errors.Is(err, pgx.ErrNoRows) {
		return v, errorf(http.StatusNotFound, CodeSessionNotFound, "session %q is not registered in tenant %q", session, tenant)
	}
	if err != nil {
		return v, err
	}
	// The earliest revocation that covers the session is the one that ended it.
	cover := func(nb *time.Time, opID, cause, reason *string) {
		if nb == nil || v.IssuedAt.After(*nb) {
			return
		}
		if v.RevokedAt == nil || nb.Before(*v.RevokedAt) {
			v.RevokedAt, v.RevokeOperation, v.RevokeCause, v.RevokeReason = nb, opID, cause, reason
		}
	}
	cover(userNB, userOp, userCause, userReason)
	cover(tenantNB, tenantOp, tenantCause, tenantReason)
	switch {
	case v.RevokedAt != nil && (v.RevokeCause == nil || *v.RevokeCause != events.CauseSessionEnded):
		v.Status = "revoked"
	case v.EndedAt != nil:
		v.Status = "ended"
	case v.ExpiresAt != nil && v.ExpiresAt.Before(time.Now()):
		v.Status = "expired"
	default:
		v.Status = "active"
	}
	return v, nil
}
