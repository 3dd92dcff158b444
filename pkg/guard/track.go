package guard

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/evict-dev/evict/events"
)

// Headers of evictd's session RPC (services/admin/rpc.go); its subjects
// are events.RPCSubject.
const (
	rpcStatusHeader   = "Evict-Status"
	rpcSessionHeader  = "Evict-Session"
	rpcInstanceHeader = "Evict-Instance"
)

// NewSession is a session to register with evict through Track.
type NewSession struct {
	Tenant, User, ID string
	// Client is web, mobile, workflow or another short lowercase name.
	Client string
	// IssuedAt, if set, is capped at evict's clock; by default evict's now.
	IssuedAt  time.Time
	ExpiresAt time.Time
	// Optional descriptions shown in evict's session views.
	DeviceID, Platform, AppVersion, IP, UserAgent string
	// TrustedDevice says the login skipped 2FA on a remembered device.
	TrustedDevice bool
}

// RPCError is evict's refusal of a Track or End request.
type RPCError struct {
	Status  int    // the HTTP status evict's API would have answered
	Code    string // e.g. "invalid_identifier", "tenant_not_found"
	Message string
}

func (e *RPCError) Error() string {
	return fmt.Sprintf("guard: evict refused: %d %s: %s", e.Status, e.Code, e.Message)
}

// Track registers a new session with evict, with this guard instance as its
// holder, over NATS (the guard's credential, no admin token). It returns the
// session as Check wants it, with the issued_at evict recorded: evict's
// clock, the clock of the logout watermarks.
func (g *Guard) Track(ctx context.Context, s NewSession) (Session, error) {
	body := map[string]any{"session_id": s.ID, "user_id": s.User, "client": s.Client,
		"device_id": s.DeviceID, "platform": s.Platform, "app_version": s.AppVersion,
		"ip": s.IP, "user_agent": s.UserAgent, "trusted_device": s.TrustedDevice}
	if !s.IssuedAt.IsZero() {
		body["issued_at"] = s.IssuedAt
	}
	if !s.ExpiresAt.IsZero() {
		body["expires_at"] = s.ExpiresAt
	}
	b, err := json.Marshal(body)
	if err != nil {
		return Session{}, fmt.Errorf("guard: track: %w", err)
	}
	var out struct {
		IssuedAt time.Time `json:"issued_at"`
	}
	if err := g.rpc(ctx, "register", s.Tenant, "", b, &out); err != nil {
		return Session{}, err
	}
	return Session{Tenant: s.Tenant, User: s.User, ID: s.ID, IssuedAt: out.IssuedAt}, nil
}

// End ends a session at evict (a normal logout): evict revokes it, so a
// copy of its credential is refused by every guard.
func (g *Guard) End(ctx context.Context, tenant, session string) error {
	return g.rpc(ctx, "end", tenant, session, nil, nil)
}

func (g *Guard) rpc(ctx context.Context, op, tenant, session string, body []byte, out any) error {
	subject, err := events.RPCSubject(tenant, op)
	if err != nil {
		return fmt.Errorf("guard: %s: %w", op, err)
	}
	msg := nats.NewMsg(subject)
	msg.Header.Set(rpcInstanceHeader, g.cfg.Instance)
	if session != "" {
		msg.Header.Set(rpcSessionHeader, session)
	}
	msg.Data = body
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	resp, err := g.cfg.Conn.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return fmt.Errorf("guard: %s: %w", subject, err)
	}
	status, err := strconv.Atoi(resp.Header.Get(rpcStatusHeader))
	if err != nil {
		return fmt.Errorf("guard: %s: answer without status", subject)
	}
	if status >= 300 {
		e := &RPCError{Status: status, Code: http.StatusText(status)}
		var p struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		if json.Unmarshal(resp.Data, &p) == nil && p.Error != "" {
			e.Code, e.Message = p.Error, p.Message
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(resp.Data, out); err != nil {
			return fmt.Errorf("guard: %s: decode answer: %w", subject, err)
		}
	}
	return nil
}

// KeyOptions are the NATS options of a guard that connects to evictd's
// embedded NATS with a guard key (`evictd keys create --role guard`): the
// key as the connection token, and the reply inbox prefix the key's
// permissions allow (a tenant-scoped guard may receive on its own inbox
// only). Pass them to nats.Connect with the server's URL, without a user.
func KeyOptions(key string) []nats.Option {
	return []nats.Option{nats.Token(key), nats.CustomInboxPrefix(events.GuardInbox(key))}
}
