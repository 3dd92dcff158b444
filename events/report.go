package events

import (
	"fmt"
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

// ReportSubject is the subject a guard instance reports on; kind is
// "applied", "session" or "seen".
func ReportSubject(instance, kind string) (string, error) {
	if err := CheckID("instance", instance); err != nil {
		return "", err
	}
	if kind != "applied" && kind != "session" && kind != "seen" {
		return "", fmt.Errorf("events: %q is not a report kind", kind)
	}
	return ReportPrefix + instance + "." + kind, nil
}
