package events

import "fmt"

// Stream names and subject roots. They are part of the contract: NATS
// permissions in deploy/ and integrators' consumers refer to them.
const (
	StateStream  = "EVICT_STATE"
	EventsStream = "EVICT_EVENTS"

	StatePrefix  = "evict.state."
	EventsPrefix = "evict.events."

	// HeartbeatSubject carries the relay's heartbeat. A heartbeat is only
	// published after the outbox was found empty, so a guard that applied it
	// has applied every revocation committed before it was sent.
	HeartbeatSubject = "evict.state.heartbeat"
)

// Kinds of state entries: the token after the tenant in a state subject.
const (
	KindTenant  = "tenant"
	KindUser    = "user"
	KindSession = "session"
	KindDevice  = "device" // a device whose trust was revoked
	KindTrust   = "trust"  // a user's trust watermark: devices trusted before it are not
	// KindUsers is a batch of user watermarks (TypeUsersRevoked), named by
	// its event id. Each batch keeps its own subject: a guard applies the
	// larger of a batch's watermark and the user's own, whichever it
	// reads first.
	KindUsers = "users"
)

// TenantStateSubject is the subject of a tenant's not-before watermark.
func TenantStateSubject(tenant string) (string, error) {
	if err := CheckID("tenant", tenant); err != nil {
		return "", err
	}
	return StatePrefix + tenant + "." + KindTenant, nil
}

// UserStateSubject is the subject of a user's not-before watermark.
func UserStateSubject(tenant, user string) (string, error) {
	if err := checkIDs("tenant", tenant, "user", user); err != nil {
		return "", err
	}
	return StatePrefix + tenant + "." + KindUser + "." + user, nil
}

// SessionStateSubject is the subject of one revoked session.
func SessionStateSubject(tenant, session string) (string, error) {
	if err := checkIDs("tenant", tenant, "session", session); err != nil {
		return "", err
	}
	return StatePrefix + tenant + "." + KindSession + "." + session, nil
}

// DeviceStateSubject is the subject of one device whose trust was revoked.
func DeviceStateSubject(tenant, device string) (string, error) {
	if err := checkIDs("tenant", tenant, "device", device); err != nil {
		return "", err
	}
	return StatePrefix + tenant + "." + KindDevice + "." + device, nil
}

// TrustStateSubject is the subject of a user's trust watermark.
func TrustStateSubject(tenant, user string) (string, error) {
	if err := checkIDs("tenant", tenant, "user", user); err != nil {
		return "", err
	}
	return StatePrefix + tenant + "." + KindTrust + "." + user, nil
}

// UsersStateSubject is the subject of a batch of user watermarks; batch is
// the event's id.
func UsersStateSubject(tenant, batch string) (string, error) {
	if err := checkIDs("tenant", tenant, "batch", batch); err != nil {
		return "", err
	}
	return StatePrefix + tenant + "." + KindUsers + "." + batch, nil
}

// TenantStateFilter is the filter subject that selects all of a tenant's
// revocation state.
func TenantStateFilter(tenant string) (string, error) {
	if err := CheckID("tenant", tenant); err != nil {
		return "", err
	}
	return StatePrefix + tenant + ".>", nil
}

// EventSubject is the history subject of a command event, e.g.
// "evict.events.acme.member.removed". kind is the subject kind of a history
// event type (a non-empty value of Types).
func EventSubject(tenant, kind string) (string, error) {
	if err := CheckID("tenant", tenant); err != nil {
		return "", err
	}
	if !historyKinds[kind] {
		return "", fmt.Errorf("events: %q is not the kind of a history event", kind)
	}
	return EventsPrefix + tenant + "." + kind, nil
}

var historyKinds = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range Types {
		if k != "" {
			m[k] = true
		}
	}
	return m
}()

// ParseStateSubject splits a state subject into its parts. kind is one of
// the Kind constants; id is empty for KindTenant. It returns
// an error for the heartbeat subject and for anything malformed.
func ParseStateSubject(subject string) (tenant, kind, id string, err error) {
	if len(subject) <= len(StatePrefix) || subject[:len(StatePrefix)] != StatePrefix {
		return "", "", "", fmt.Errorf("events: %q is not a state subject", subject)
	}
	rest := subject[len(StatePrefix):]
	var toks [3]string
	n := 0
	start := 0
	for i := 0; i <= len(rest); i++ {
		if i == len(rest) || rest[i] == '.' {
			if n == len(toks) {
				return "", "", "", fmt.Errorf("events: %q has too many tokens", subject)
			}
			toks[n] = rest[start:i]
			n++
			start = i + 1
		}
	}
	switch {
	case n == 2 && toks[1] == KindTenant:
	case n == 3 && (toks[1] == KindUser || toks[1] == KindSession || toks[1] == KindDevice || toks[1] == KindTrust || toks[1] == KindUsers):
		if !ValidID(toks[2]) {
			return "", "", "", fmt.Errorf("events: %q: %w", subject, ErrInvalidID)
		}
	default:
		return "", "", "", fmt.Errorf("events: %q is not a state subject", subject)
	}
	if !ValidID(toks[0]) {
		return "", "", "", fmt.Errorf("events: %q: %w", subject, ErrInvalidID)
	}
	return toks[0], toks[1], toks[2], nil
}

func checkIDs(f1, v1, f2, v2 string) error {
	if err := CheckID(f1, v1); err != nil {
		return err
	}
	return CheckID(f2, v2)
}
