package provider

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// TypeLogout is the "type" every push carries, so an app that receives other
// pushes can tell a logout apart.
const TypeLogout = "logout"

// Push is one logout notification to one device.
type Push struct {
	// Token is the device's push token (APNs device token, FCM registration
	// token, or whatever the webhook gateway registered); required.
	Token string
	// Topic is the APNs topic, the app's bundle id; empty uses the
	// provider's configured default.
	Topic string
	// Project is the FCM project; empty uses the project of the service
	// account.
	Project string
	// CollapseID lets the provider replace an undelivered push with a newer
	// one carrying the same id (APNs apns-collapse-id, FCM collapse_key).
	CollapseID string

	// Tenant, User, Session, OperationID and EventID say which logout this
	// is; the app receives the non-empty ones. Session is empty for a
	// user-wide or tenant-wide logout.
	Tenant, User, Session, OperationID, EventID string

	// Alert, if set, makes the push visible to the user as well; nil sends a
	// silent background push.
	Alert *Alert
	// Expiration is when the provider may stop trying to deliver; zero means
	// deliver now or never (APNs apns-expiration 0, FCM ttl 0s).
	Expiration time.Time
}

// Alert is the visible part of a push.
type Alert struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
}

// Data returns the logout as the flat string map an app receives: "type"
// (always TypeLogout) and the non-empty ones of "tenant", "user",
// "session", "operation_id" and "event_id". Every provider delivers these
// same keys, so the app parses one shape whatever the transport.
func (p Push) Data() map[string]string {
	d := map[string]string{"type": TypeLogout}
	for k, v := range map[string]string{
		"tenant":       p.Tenant,
		"user":         p.User,
		"session":      p.Session,
		"operation_id": p.OperationID,
		"event_id":     p.EventID,
	} {
		if v != "" {
			d[k] = v
		}
	}
	return d
}

// idSpace is the UUID namespace of MessageID ("evict push", fixed forever:
// changing it changes every id and defeats de-duplication across a deploy).
var idSpace = uuid.MustParse("1f0b7c52-6a57-4c2e-9a9c-6576696374ff")

// MessageID returns a UUID that names this push: derived from the event id
// and the token when the event id is set, so every retry of the same push to
// the same device carries the same id and the receiving end (a webhook
// gateway, or someone correlating APNs logs) can drop duplicates. Without an
// event id it is random.
func (p Push) MessageID() string {
	if p.EventID == "" {
		return uuid.NewString()
	}
	return uuid.NewSHA1(idSpace, []byte(p.EventID+"\x00"+p.Token)).String()
}

// Result is what the provider answered to an accepted push, and, alongside an
// error, what it answered to a refused one.
type Result struct {
	// Status is the HTTP status; 0 when no answer came.
	Status int
	// ProviderID identifies the push at the provider: APNs apns-id, FCM
	// message name, webhook-id.
	ProviderID string
	// RetryAfter is how long the provider asked to wait before a retry; 0
	// when it did not say.
	RetryAfter time.Duration
}

// Sender sends one push to one device.
//
// Send makes one attempt (plus, for providers with expiring credentials, one
// retry with fresh credentials) and does not back off: retries are the
// caller's, guided by the error. A refusal or a failure to reach the provider
// is an *Error, matched by errors.Is against ErrTokenInvalid, ErrRetryable
// and ErrAuth; when ctx ends first Send returns an error wrapping ctx.Err().
// Send must be safe for concurrent use.
type Sender interface {
	Send(ctx context.Context, p Push) (Result, error)
	// Name is the provider's name as registered on devices: "apns", "fcm"
	// or "webhook".
	Name() string
}
