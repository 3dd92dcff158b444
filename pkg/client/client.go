// Package client is the Go client of evict's admin API, for admin portals,
// directory sync jobs, session holders that register their sessions, and
// evict's own CLI and tests.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client calls the admin API. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// New returns a client for the API at baseURL (e.g. "http://127.0.0.1:8080")
// authenticating with token. A nil httpClient uses one with a 30s timeout.
func New(baseURL, token string, httpClient *http.Client) *Client {
	if httpClient == nil {
		httpClient = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), token: token, http: httpClient}
}

// APIError is an error answer of the API.
type APIError struct {
	Status  int    `json:"status"`
	Code    string `json:"error"`
	Message string `json:"message"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("evict: %d %s: %s", e.Status, e.Code, e.Message)
}

// IsCode reports whether err is an *APIError with the given code.
func IsCode(err error, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

// CallOption modifies one request.
type CallOption func(*http.Request)

// WithIdempotencyKey makes a retried command a no-op that returns the first answer.
func WithIdempotencyKey(key string) CallOption {
	return func(r *http.Request) { r.Header.Set("Idempotency-Key", key) }
}

// Do sends a request with a JSON body (nil for none) and decodes a JSON
// answer into out (nil to discard). Non-2xx answers are *APIError.
func (c *Client) Do(ctx context.Context, method, path string, body, out any, opts ...CallOption) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("evict: encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("evict: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	for _, o := range opts {
		o(req)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("evict: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		ae := &APIError{Status: resp.StatusCode}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		if json.Unmarshal(b, ae) != nil || ae.Code == "" {
			ae.Code, ae.Message = "http_"+fmt.Sprint(resp.StatusCode), strings.TrimSpace(string(b))
		}
		ae.Status = resp.StatusCode
		return ae
	}
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("evict: decode answer of %s %s: %w", method, path, err)
	}
	return nil
}

func esc(s string) string { return url.PathEscape(s) }

// Accepted is the answer to a command.
type Accepted struct {
	OperationID string   `json:"operation_id"`
	StatusURL   string   `json:"status_url"`
	Added       []string `json:"added,omitempty"`
	Removed     []string `json:"removed,omitempty"`
}

// Tenant is a tenant.
type Tenant struct {
	ID        string     `json:"id"`
	CreatedAt time.Time  `json:"created_at"`
	NotBefore *time.Time `json:"not_before,omitempty"`
}

// CreateTenant creates the tenant if it does not exist.
func (c *Client) CreateTenant(ctx context.Context, tenant string) (Tenant, error) {
	var t Tenant
	err := c.Do(ctx, http.MethodPut, "/v1/tenants/"+esc(tenant), nil, &t)
	return t, err
}

type reason struct {
	Reason string `json:"reason,omitempty"`
}

// AddMember adds user to group.
func (c *Client) AddMember(ctx context.Context, tenant, group, user string, opts ...CallOption) (Accepted, error) {
	var a Accepted
	err := c.Do(ctx, http.MethodPut, "/v1/tenants/"+esc(tenant)+"/groups/"+esc(group)+"/members/"+esc(user), nil, &a, opts...)
	return a, err
}

// RemoveMember removes user from group, which logs the user out of every
// session in the tenant.
func (c *Client) RemoveMember(ctx context.Context, tenant, group, user, why string, opts ...CallOption) (Accepted, error) {
	var a Accepted
	err := c.Do(ctx, http.MethodDelete, "/v1/tenants/"+esc(tenant)+"/groups/"+esc(group)+"/members/"+esc(user), reason{why}, &a, opts...)
	return a, err
}

// SetMembers replaces the group's members; users dropped are logged out.
func (c *Client) SetMembers(ctx context.Context, tenant, group string, users []string, why string, opts ...CallOption) (Accepted, error) {
	var a Accepted
	body := struct {
		Users  []string `json:"users"`
		Reason string   `json:"reason,omitempty"`
	}{users, why}
	if body.Users == nil {
		body.Users = []string{}
	}
	err := c.Do(ctx, http.MethodPut, "/v1/tenants/"+esc(tenant)+"/groups/"+esc(group)+"/members", body, &a, opts...)
	return a, err
}

// LogoutUser logs user out of every session in the tenant.
func (c *Client) LogoutUser(ctx context.Context, tenant, user, why string, opts ...CallOption) (Accepted, error) {
	var a Accepted
	err := c.Do(ctx, http.MethodPost, "/v1/tenants/"+esc(tenant)+"/users/"+esc(user)+"/logout", reason{why}, &a, opts...)
	return a, err
}

// AccessChanged logs user out because their role, permissions or access level changed.
func (c *Client) AccessChanged(ctx context.Context, tenant, user, why string, opts ...CallOption) (Accepted, error) {
	var a Accepted
	err := c.Do(ctx, http.MethodPost, "/v1/tenants/"+esc(tenant)+"/users/"+esc(user)+"/access-changed", reason{why}, &a, opts...)
	return a, err
}

// LogoutSession logs out one session.
func (c *Client) LogoutSession(ctx context.Context, tenant, session, why string, opts ...CallOption) (Accepted, error) {
	var a Accepted
	err := c.Do(ctx, http.MethodPost, "/v1/tenants/"+esc(tenant)+"/sessions/"+esc(session)+"/logout", reason{why}, &a, opts...)
	return a, err
}

// LogoutUsers logs out every session of each user.
func (c *Client) LogoutUsers(ctx context.Context, tenant string, users []string, why string, opts ...CallOption) (Accepted, error) {
	var a Accepted
	body := struct {
		Users  []string `json:"users"`
		Reason string   `json:"reason,omitempty"`
	}{users, why}
	err := c.Do(ctx, http.MethodPost, "/v1/tenants/"+esc(tenant)+"/logout", body, &a, opts...)
	return a, err
}

// LogoutTenant logs out every session of the tenant.
func (c *Client) LogoutTenant(ctx context.Context, tenant, why string, opts ...CallOption) (Accepted, error) {
	var a Accepted
	body := struct {
		All    bool   `json:"all"`
		Reason string `json:"reason,omitempty"`
	}{true, why}
	err := c.Do(ctx, http.MethodPost, "/v1/tenants/"+esc(tenant)+"/logout", body, &a, opts...)
	return a, err
}

// NewSession is a session to register.
type NewSession struct {
	SessionID string     `json:"session_id"`
	UserID    string     `json:"user_id"`
	Client    string     `json:"client"`
	IssuedAt  *time.Time `json:"issued_at,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	DeviceID  string     `json:"device_id,omitempty"`
	Platform  string     `json:"platform,omitempty"`
	Holder    string     `json:"holder,omitempty"`
	IP        string     `json:"ip,omitempty"`
	UserAgent string     `json:"user_agent,omitempty"`
	// Push is where evict pushes the logout (mobile sessions).
	Push *PushTarget `json:"push,omitempty"`
}

// PushTarget is a session's push destination: provider "apns", "fcm" or
// "webhook", the device token, and the app identity (APNs topic or FCM
// project; empty for evictd's default).
type PushTarget struct {
	Provider string `json:"provider"`
	Token    string `json:"token"`
	Topic    string `json:"topic,omitempty"`
}

// Session is a registered session and its status.
type Session struct {
	Tenant          string     `json:"tenant"`
	SessionID       string     `json:"session_id"`
	UserID          string     `json:"user_id"`
	Client          string     `json:"client"`
	IssuedAt        time.Time  `json:"issued_at"`
	RegisteredAt    time.Time  `json:"registered_at"`
	ExpiresAt       *time.Time `json:"expires_at,omitempty"`
	Status          string     `json:"status"`
	EndedAt         *time.Time `json:"ended_at,omitempty"`
	RevokedAt       *time.Time `json:"revoked_at,omitempty"`
	RevokeCause     string     `json:"revoke_cause,omitempty"`
	RevokeReason    string     `json:"revoke_reason,omitempty"`
	RevokeOperation string     `json:"revoke_operation,omitempty"`
	Holder          string     `json:"holder,omitempty"`
	DeviceID        string     `json:"device_id,omitempty"`
	Platform        string     `json:"platform,omitempty"`
	AppVersion      string     `json:"app_version,omitempty"`
	IP              string     `json:"ip,omitempty"`
	UserAgent       string     `json:"user_agent,omitempty"`
	TrustedDevice   bool       `json:"trusted_device"`
	LastSeenAt      time.Time  `json:"last_seen_at"`
	Termination     string     `json:"termination,omitempty"`
	TerminatedAt    *time.Time `json:"terminated_at,omitempty"`
}

// RegisterSession registers a session. Use the IssuedAt of the answer in
// guard checks: it is on evict's clock.
func (c *Client) RegisterSession(ctx context.Context, tenant string, s NewSession) (Session, error) {
	var out Session
	err := c.Do(ctx, http.MethodPost, "/v1/tenants/"+esc(tenant)+"/sessions", s, &out)
	return out, err
}

// GetSession returns a session and whether it is active, revoked, ended or expired.
func (c *Client) GetSession(ctx context.Context, tenant, session string) (Session, error) {
	var out Session
	err := c.Do(ctx, http.MethodGet, "/v1/tenants/"+esc(tenant)+"/sessions/"+esc(session), nil, &out)
	return out, err
}

// EndSession ends a session (a normal logout at the holder).
func (c *Client) EndSession(ctx context.Context, tenant, session string) (Accepted, error) {
	var a Accepted
	err := c.Do(ctx, http.MethodDelete, "/v1/tenants/"+esc(tenant)+"/sessions/"+esc(session), nil, &a)
	return a, err
}

// Operation is what a command did and how far its enforcement got.
type Operation struct {
	OperationID       string     `json:"operation_id"`
	Tenant            string     `json:"tenant"`
	Kind              string     `json:"kind"`
	Actor             string     `json:"actor"`
	Reason            string     `json:"reason,omitempty"`
	AcceptedAt        time.Time  `json:"accepted_at"`
	PublishedAt       *time.Time `json:"published_at,omitempty"`
	CompletedAt       *time.Time `json:"completed_at,omitempty"`
	CompletionSeconds *float64   `json:"completion_seconds,omitempty"`
	// Request is what the command asked for.
	Request struct {
		Tenant     bool     `json:"tenant"`
		UserCount  int      `json:"user_count"`
		Users      []string `json:"users"`
		Sessions   []string `json:"sessions"`
		Group      string   `json:"group"`
		UsersAdded int      `json:"users_added"`
		UsersKept  int      `json:"users_kept"`
		Truncated  bool     `json:"users_truncated"`
	} `json:"request"`
	Events struct {
		Total   int `json:"total"`
		Pending int `json:"pending"`
	} `json:"events"`
	// Status is "publishing" or "published" (all events are in JetStream).
	Status string `json:"status"`
	// Summary is "pending", "partial" (waiting only on holders that are
	// down) or "completed" (every target enforced or terminated).
	Summary          string         `json:"summary"`
	Counts           map[string]int `json:"counts"`
	TotalTargets     int            `json:"total_targets"`
	Targets          []Target       `json:"targets"`
	TargetsTruncated bool           `json:"targets_truncated"`
	// TargetsPending is true while the targets of a command that logged
	// out more than 1,000 users are still being recorded: Targets and
	// Counts are incomplete, and Summary is "pending".
	TargetsPending bool         `json:"targets_pending"`
	Guards         []GuardState `json:"guards"`
	// PushCounts counts the operation's device pushes by status: pending,
	// sending, pushed, token_removed, failed, dead.
	PushCounts map[string]int `json:"push_counts"`
}

// Target is a session an operation aimed at and its state: pending,
// enforced, deferred, terminated or failed.
type Target struct {
	SessionID  string `json:"session_id"`
	UserID     string `json:"user_id"`
	Client     string `json:"client"`
	Holder     string `json:"holder"`
	DeviceID   string `json:"device_id"`
	Status     string `json:"status"`
	HolderLive bool   `json:"holder_live"`
	Detail     string `json:"detail"`
}

// GuardState is a live guard instance and whether it applied the operation.
type GuardState struct {
	Instance   string    `json:"instance"`
	AppliedSeq int64     `json:"applied_seq"`
	Applied    bool      `json:"applied"`
	LastReport time.Time `json:"last_report_at"`
}

// Operation returns what operation id did.
func (c *Client) Operation(ctx context.Context, id string) (Operation, error) {
	var op Operation
	err := c.Do(ctx, http.MethodGet, "/v1/operations/"+esc(id), nil, &op)
	return op, err
}

// WaitOperation long-polls until the operation is completed or wait (at
// most 60s) runs out, and returns its state either way.
func (c *Client) WaitOperation(ctx context.Context, id string, wait time.Duration) (Operation, error) {
	var op Operation
	err := c.Do(ctx, http.MethodGet, "/v1/operations/"+esc(id)+"?wait="+wait.String(), nil, &op)
	return op, err
}

// ListOptions filters and pages a session listing; zero values are unset.
type ListOptions struct {
	Prefix string // user id prefix (q)
	Client string
	Holder string
	Group  string
	Limit  int
	Cursor string
}

// SessionPage is one page of live sessions.
type SessionPage struct {
	Tenant     string    `json:"tenant"`
	Items      []Session `json:"items"`
	Total      int       `json:"total"`
	TotalExact bool      `json:"total_exact"`
	NextCursor string    `json:"next_cursor,omitempty"`
}

func (o ListOptions) query() string {
	q := url.Values{}
	for k, v := range map[string]string{"q": o.Prefix, "client": o.Client, "holder": o.Holder, "group": o.Group, "cursor": o.Cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if o.Limit > 0 {
		q.Set("limit", fmt.Sprint(o.Limit))
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// ListSessions lists the tenant's live sessions, most recently seen first;
// with user set, only that user's.
func (c *Client) ListSessions(ctx context.Context, tenant, user string, o ListOptions) (SessionPage, error) {
	path := "/v1/tenants/" + esc(tenant) + "/sessions"
	if user != "" {
		path = "/v1/tenants/" + esc(tenant) + "/users/" + esc(user) + "/sessions"
	}
	var p SessionPage
	err := c.Do(ctx, http.MethodGet, path+o.query(), nil, &p)
	return p, err
}

// TrustedDevice is a device that may skip the second factor.
type TrustedDevice struct {
	DeviceID  string     `json:"device_id"`
	Label     string     `json:"label,omitempty"`
	TrustedAt time.Time  `json:"trusted_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Trusted   bool       `json:"trusted"`
}

// TrustDevice records that user chose "remember this device". Pass the
// answer's TrustedAt to guard.DeviceTrusted.
func (c *Client) TrustDevice(ctx context.Context, tenant, user, device, label string) (TrustedDevice, error) {
	var d TrustedDevice
	err := c.Do(ctx, http.MethodPost, "/v1/tenants/"+esc(tenant)+"/users/"+esc(user)+"/trusted-devices",
		map[string]string{"device_id": device, "label": label}, &d)
	return d, err
}

// TrustedDevices lists the user's devices, trusted or not.
func (c *Client) TrustedDevices(ctx context.Context, tenant, user string) ([]TrustedDevice, error) {
	var out struct {
		Devices []TrustedDevice `json:"devices"`
	}
	err := c.Do(ctx, http.MethodGet, "/v1/tenants/"+esc(tenant)+"/users/"+esc(user)+"/trusted-devices", nil, &out)
	return out.Devices, err
}

// RevokeDevice withdraws one device's trust; logout also ends its sessions.
func (c *Client) RevokeDevice(ctx context.Context, tenant, user, device string, logout bool, why string, opts ...CallOption) (Accepted, error) {
	var a Accepted
	err := c.Do(ctx, http.MethodDelete, "/v1/tenants/"+esc(tenant)+"/users/"+esc(user)+"/trusted-devices/"+esc(device),
		map[string]any{"logout": logout, "reason": why}, &a, opts...)
	return a, err
}

// RevokeAllDevices withdraws the trust of every device of the user; logout
// also ends all the user's sessions.
func (c *Client) RevokeAllDevices(ctx context.Context, tenant, user string, logout bool, why string, opts ...CallOption) (Accepted, error) {
	var a Accepted
	err := c.Do(ctx, http.MethodPost, "/v1/tenants/"+esc(tenant)+"/users/"+esc(user)+"/trusted-devices/revoke",
		map[string]any{"logout": logout, "reason": why}, &a, opts...)
	return a, err
}
