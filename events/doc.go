// Package events is evict's public contract on the bus: the CloudEvents 1.0
// types evict publishes, the NATS subjects they travel on, and the rules for
// the identifiers that become subject tokens.
//
// Nothing here imports a service: integrators that consume evict's streams
// without the guard SDK can depend on this package (or on the JSON Schemas in
// events/schemas) alone.
//
// # Streams and subjects
//
// Every subject lives under "evict.>". Identifiers (tenant, user, session,
// group) are single subject tokens and are checked with [ValidID] before any
// subject is built, so an identifier can never add a token or a wildcard.
//
//	evict.state.<tenant>.tenant            tenant-wide not-before watermark  (stream EVICT_STATE)
//	evict.state.<tenant>.user.<user>       per-user not-before watermark     (stream EVICT_STATE)
//	evict.state.<tenant>.session.<session> one revoked session               (stream EVICT_STATE)
//	evict.state.<tenant>.device.<device>   one device whose trust was revoked (stream EVICT_STATE)
//	evict.state.<tenant>.trust.<user>      per-user trust watermark          (stream EVICT_STATE)
//	evict.state.heartbeat                  relay heartbeat: outbox drained   (stream EVICT_STATE)
//	evict.events.<tenant>.<kind>           history of commands, e.g. member.removed (stream EVICT_EVENTS)
//	evict.report.<instance>.applied        a guard's applied sequence          (core NATS, see report.go)
//	evict.report.<instance>.session        a session's graceful termination    (core NATS)
//	evict.report.<tenant>.<instance>.<kind> the same, from a guard limited to some tenants
//	evict.rpc.sessions.<tenant>.register   a guard registers a session         (core NATS request)
//	evict.rpc.sessions.<tenant>.end        a guard ends a session              (core NATS request)
//
// EVICT_STATE keeps only the last message per subject and drops messages
// older than the longest session lifetime, so reading it from the start gives
// the complete current revocation state without replaying history. A
// tenant-wide logout is a single message, whatever the tenant's size.
package events
