package events

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Reports flow the other way: from session holders (guards) to evict, on
// core NATS (no stream), so that evict can confirm that a logout was
// enforced. A report costs O(1) per guard instance, not one message per
// session: a guard reports the EVICT_STATE sequence it has applied, and
// evict compares it with the sequence of each operation's events.
//
//	evict.report.<instance>.applied   GuardApplied, after applying and every few seconds
//	evict.report.<instance>.session   SessionTermination, only for sessions with in-flight work
//	evict.report.<instance>.seen      SessionsSeen, the sessions that made requests, once per interval
//
// Those are the subjects of a guard that holds every tenant. A guard limited
// to some tenants reports per tenant, with the tenant in the subject:
//
//	evict.report.<tenant>.<instance>.applied|session|seen
//
// so that NATS permissions can bind a guard's credential to its tenants
// (publish allowed on evict.report.<tenant>.*.* only), and evict trusts a
// tenant-scoped report only for the tenant its subject names. The two forms
// differ in their number of tokens.
const (
	ReportPrefix = "evict.report."

	TypeGuardApplied       = "dev.evict.guard.applied.v1"
	TypeSessionTermination = "dev.evict.session.termination.v1"
	TypeSessionsSeen       = "dev.evict.sessions.seen.v1"
)

// MaxSeenPerReport bounds the sessions of one SessionsSeen report; a guard
// that saw more sends several.
const MaxSeenPerReport = 1000

// SessionsSeen lists the sessions that made requests through a guard
// instance since its previous SessionsSeen report: evict's last-seen
// heartbeat, one message per interval instead of one per request.
type SessionsSeen struct {
	Instance string        `json:"instance"`
	Sessions []SeenSession `json:"sessions"`
}

// SeenSession is one session in a SessionsSeen report.
type SeenSession struct {
	Tenant  string `json:"tenant"`
	Session string `json:"session"`
}

// Termination states a guard reports for a revoked session that had
// in-flight work.
const (
	// TerminationDeferred: new requests are refused, in-flight work goes on.
	TerminationDeferred = "deferred"
	// TerminationTerminated: the in-flight work ended (or its deadline
	// passed) and the session's live connections are closed.
	TerminationTerminated = "terminated"
)

// GuardApplied says which EVICT_STATE sequence a guard instance has applied.
type GuardApplied struct {
	Instance   string    `json:"instance"`
	Tenants    []string  `json:"tenants,omitempty"` // empty: every tenant
	AppliedSeq uint64    `json:"applied_seq"`
	Ready      bool      `json:"ready"`
	StartedAt  time.Time `json:"started_at"`
	// Stopping is set in the last report of a guard that shuts down: evict
	// stops counting it as live at once, instead of once it has been silent
	// for the liveness window, so that logouts do not wait for it.
	Stopping bool `json:"stopping,omitempty"`
}

// SessionTermination reports the graceful end of a revoked session that had
// in-flight work.
type SessionTermination struct {
	Instance    string `json:"instance"`
	Tenant      string `json:"tenant"`
	User        string `json:"user"`
	Session     string `json:"session"`
	State       string `json:"state"` // TerminationDeferred or TerminationTerminated
	InFlight    int    `json:"in_flight"`
	OperationID string `json:"operation_id,omitempty"`
	// TimedOut is true when the drain deadline ended the work.
	TimedOut bool `json:"timed_out,omitempty"`
}

// ReportSubject is the subject a guard instance reports on about tenant;
// kind is "applied", "session" or "seen". tenant is "" for a guard that
// holds every tenant.
func ReportSubject(tenant, instance, kind string) (string, error) {
	if err := CheckID("instance", instance); err != nil {
		return "", err
	}
	if kind != "applied" && kind != "session" && kind != "seen" {
		return "", fmt.Errorf("events: %q is not a report kind", kind)
	}
	if tenant == "" {
		return ReportPrefix + instance + "." + kind, nil
	}
	if err := CheckID("tenant", tenant); err != nil {
		return "", err
	}
	return ReportPrefix + tenant + "." + instance + "." + kind, nil
}

// ParseReportSubject splits a report subject into its parts; tenant is ""
// for the report of a guard that holds every tenant.
func ParseReportSubject(subject string) (tenant, instance, kind string, err error) {
	rest, ok := strings.CutPrefix(subject, ReportPrefix)
	if !ok {
		return "", "", "", fmt.Errorf("events: %q is not a report subject", subject)
	}
	parts := strings.Split(rest, ".")
	switch len(parts) {
	case 2:
		instance, kind = parts[0], parts[1]
	case 3:
		tenant, instance, kind = parts[0], parts[1], parts[2]
		if err := CheckID("tenant", tenant); err != nil {
			return "", "", "", err
		}
	default:
		return "", "", "", fmt.Errorf("events: %q is not a report subject", subject)
	}
	if err := CheckID("instance", instance); err != nil {
		return "", "", "", err
	}
	if kind != "applied" && kind != "session" && kind != "seen" {
		return "", "", "", fmt.Errorf("events: %q is not a report kind", kind)
	}
	return tenant, instance, kind, nil
}

// Session RPC: a guard registers and ends sessions over NATS with its own
// credential, on a subject that names the tenant (so that permissions bind
// the credential to its tenants). op is "register" or "end".
//
//	evict.rpc.sessions.<tenant>.register
//	evict.rpc.sessions.<tenant>.end
const RPCPrefix = "evict.rpc.sessions."

// GuardInbox is the reply-subject prefix of a guard that connects with the
// guard key token: the only subjects its credential may subscribe to (below
// it). It is derived from the token, so that the server and pkg/guard agree
// without configuration, and reveals nothing of it.
func GuardInbox(token string) string {
	h := sha256.Sum256([]byte("evict guard inbox\x00" + token))
	return "_INBOX." + hex.EncodeToString(h[:12])
}

// RPCSubject is the session RPC subject of op for tenant.
func RPCSubject(tenant, op string) (string, error) {
	if err := CheckID("tenant", tenant); err != nil {
		return "", err
	}
	if op != "register" && op != "end" {
		return "", fmt.Errorf("events: %q is not a session RPC", op)
	}
	return RPCPrefix + tenant + "." + op, nil
}
