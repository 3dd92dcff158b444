package events

import (
	"errors"
	"time"
)

// SpecVersion is the CloudEvents version of every evict event.
const SpecVersion = "1.0"

// ContentType is the datacontenttype of every evict event.
const ContentType = "application/json"

// Event types. The version is part of the name: a change that is not
// backwards compatible gets a new type, published next to the old one for a
// deprecation period.
const (
	// State events, on EVICT_STATE.
	TypeTenantRevoked  = "dev.evict.tenant.revoked.v1"
	TypeUserRevoked    = "dev.evict.user.revoked.v1"
	TypeSessionRevoked = "dev.evict.session.revoked.v1"
	TypeHeartbeat      = "dev.evict.relay.heartbeat.v1"
	TypeDeviceRevoked  = "dev.evict.device.revoked.v1"
	TypeTrustRevoked   = "dev.evict.trust.revoked.v1"
	TypeUsersRevoked   = "dev.evict.users.revoked.v1"

	// History events, on EVICT_EVENTS.
	TypeMemberAdded       = "dev.evict.member.added.v1"
	TypeMemberRemoved     = "dev.evict.member.removed.v1"
	TypeAccessChanged     = "dev.evict.access.changed.v1"
	TypeSessionRegistered = "dev.evict.session.registered.v1"
	TypeSessionEnded      = "dev.evict.session.ended.v1"
)

// Types lists every event type with the subject kind of its history events
// (empty for state events). The JSON Schema of type T is
// schemas/T.json.
var Types = map[string]string{
	TypeTenantRevoked:     "",
	TypeUserRevoked:       "",
	TypeSessionRevoked:    "",
	TypeHeartbeat:         "",
	TypeDeviceRevoked:     "",
	TypeTrustRevoked:      "",
	TypeUsersRevoked:      "",
	TypeMemberAdded:       "member.added",
	TypeMemberRemoved:     "member.removed",
	TypeAccessChanged:     "access.changed",
	TypeSessionRegistered: "session.registered",
	TypeSessionEnded:      "session.ended",
}

// Causes say why a revocation happened; they are stable strings.
const (
	CauseLogout        = "logout"         // an explicit logout command
	CauseMemberRemoved = "member_removed" // removed from a group
	CauseAccessChanged = "access_changed" // role, permission or access level changed
	CauseTenantLogout  = "tenant_logout"  // everyone in the tenant
	CauseSessionEnded  = "session_ended"  // the holder ended the session
)

// Event is a CloudEvents 1.0 event in structured JSON mode.
type Event[T any] struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Subject         string    `json:"subject,omitempty"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	Data            T         `json:"data"`
}

// Source is the CloudEvents source of a tenant's events.
func Source(tenant string) string { return "/tenants/" + tenant }

// New returns an event of type typ with the standard attributes filled in.
func New[T any](id, typ, tenant, subject string, at time.Time, data T) Event[T] {
	return Event[T]{
		SpecVersion:     SpecVersion,
		ID:              id,
		Source:          Source(tenant),
		Type:            typ,
		Subject:         subject,
		Time:            at.UTC(),
		DataContentType: ContentType,
		Data:            data,
	}
}

// TenantRevoked invalidates every session of the tenant issued before NotBefore.
type TenantRevoked struct {
	Tenant      string    `json:"tenant"`
	NotBefore   time.Time `json:"not_before"`
	OperationID string    `json:"operation_id"`
	Cause       string    `json:"cause"`
	Reason      string    `json:"reason,omitempty"`
}

// UserRevoked invalidates every session of the user issued before NotBefore.
type UserRevoked struct {
	Tenant      string    `json:"tenant"`
	User        string    `json:"user"`
	NotBefore   time.Time `json:"not_before"`
	OperationID string    `json:"operation_id"`
	Cause       string    `json:"cause"`
	Group       string    `json:"group,omitempty"`
	Reason      string    `json:"reason,omitempty"`
}

// MaxUsersPerEvent is the most users one users.revoked event names.
const MaxUsersPerEvent = 1000

// UsersRevoked is UserRevoked for many users at once: a command that logs
// out more than one user publishes one per MaxUsersPerEvent users instead of
// one event per user, so that a bulk logout of 100,000 users is 100
// messages for every guard to read, not 100,000. Every session of each
// user issued before NotBefore is invalid.
type UsersRevoked struct {
	Tenant      string    `json:"tenant"`
	Users       []string  `json:"users"`
	NotBefore   time.Time `json:"not_before"`
	OperationID string    `json:"operation_id"`
	Cause       string    `json:"cause"`
	Group       string    `json:"group,omitempty"`
	Reason      string    `json:"reason,omitempty"`
}

// SessionRevoked invalidates one session, whenever it was issued.
type SessionRevoked struct {
	Tenant      string    `json:"tenant"`
	Session     string    `json:"session"`
	User        string    `json:"user,omitempty"`
	RevokedAt   time.Time `json:"revoked_at"`
	OperationID string    `json:"operation_id"`
	Cause       string    `json:"cause"`
	Reason      string    `json:"reason,omitempty"`
}

// DeviceRevoked withdraws the trust of one device (the one that skips the
// second factor). Device ids are unique within a tenant.
type DeviceRevoked struct {
	Tenant      string    `json:"tenant"`
	User        string    `json:"user"`
	Device      string    `json:"device"`
	RevokedAt   time.Time `json:"revoked_at"`
	OperationID string    `json:"operation_id"`
	Reason      string    `json:"reason,omitempty"`
}

// TrustRevoked withdraws the trust of every device of the user trusted
// before NotBefore.
type TrustRevoked struct {
	Tenant      string    `json:"tenant"`
	User        string    `json:"user"`
	NotBefore   time.Time `json:"not_before"`
	OperationID string    `json:"operation_id"`
	Reason      string    `json:"reason,omitempty"`
}

// Heartbeat is published by the relay after it found the outbox empty.
type Heartbeat struct {
	Instance string `json:"instance"`
}

// Membership is the data of member.added and member.removed.
type Membership struct {
	Tenant      string `json:"tenant"`
	Group       string `json:"group"`
	User        string `json:"user"`
	OperationID string `json:"operation_id"`
	Reason      string `json:"reason,omitempty"`
}

// AccessChanged is the data of access.changed.
type AccessChanged struct {
	Tenant      string `json:"tenant"`
	User        string `json:"user"`
	OperationID string `json:"operation_id"`
	Reason      string `json:"reason,omitempty"`
}

// SessionLifecycle is the data of session.registered and session.ended.
type SessionLifecycle struct {
	Tenant   string    `json:"tenant"`
	Session  string    `json:"session"`
	User     string    `json:"user"`
	Client   string    `json:"client"`
	IssuedAt time.Time `json:"issued_at"`
}

// Revocation is what a session holder needs from a state event: which entry
// it sets and from when.
type Revocation struct {
	Kind   string // KindTenant, KindUser, KindSession, KindDevice or KindTrust
	Tenant string
	ID     string // user (KindUser, KindTrust), session or device; empty for KindTenant
	// At is the not-before watermark (tenant, user, trust) or the
	// revocation time (session, device).
	At          time.Time
	OperationID string
	EventID     string
	EventTime   time.Time
}

// ErrUnknownType is returned by DecodeRevocation for an event type it does
// not know; consumers should skip such events, not fail, so that new types
// can be added.
var ErrUnknownType = errors.New("events: unknown event type")

// Subject is the state subject this revocation belongs on. A consumer
// compares it with the subject the message arrived on, so that a publisher
// allowed on one tenant's subjects cannot revoke another tenant's sessions.
func (r Revocation) Subject() string {
	if r.Kind == KindTenant {
		return StatePrefix + r.Tenant + "." + KindTenant
	}
	return StatePrefix + r.Tenant + "." + r.Kind + "." + r.ID
}
