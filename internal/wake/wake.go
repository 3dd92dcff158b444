// Package wake carries hints that the database changed between the parts
// of evict that act on them: that the outbox holds rows for the relay to
// publish, and that a tenant's sessions changed, for its live views. A hint
// is sent after the commit and may be lost, to a crash or a NATS outage;
// the relay also polls every second and live views look every 15 seconds,
// so a lost hint only delays.
//
// Within a process a hint is a function call, and an outbox hint can carry
// the rows a command committed: the relay of the process, when it leads,
// publishes them without reading them back (services/relay). Other evictd
// processes get a hint as a core NATS message, without rows, which the
// server drops when no other process listens. The hints were PostgreSQL NOTIFYs: a NOTIFY is a transaction of
// its own, with a transaction id and a commit record, and PostgreSQL
// signals every listening backend of the database for it. At 1,000
// commands/s in evict-bench, PostgreSQL used 0.47–0.64 of a core with them
// and 0.43–0.50 without (docs/benchmarks.md, item 36).
package wake

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
)

// Subjects of the hints on NATS. Only evictd may publish or hear them.
const (
	Prefix          = "evict.wake."
	OutboxSubject   = Prefix + "outbox"
	SessionsSubject = Prefix + "sessions" // data: the tenant
)

// Hub delivers hints to this process's listeners and, once connected, to
// the other processes'. A nil *Hub carries no hints.
type Hub struct {
	log *slog.Logger

	mu       sync.RWMutex
	outbox   func(rows []Row) bool
	sessions func(tenant string)
	nc       *nats.Conn
}

// New returns a Hub that delivers within this process until Connect.
func New(log *slog.Logger) *Hub {
	if log == nil {
		log = slog.Default()
	}
	return &Hub{log: log.With("component", "wake")}
}

// Row is an outbox row as its command committed it.
type Row struct {
	Seq       int64
	Operation uuid.NullUUID
	EventID   uuid.UUID
	Subject   string
	Payload   []byte
	// The commit took effect between Before and After, on this process's
	// clock: the relay tells by them whether one of its reads of the
	// outbox could have seen the row.
	Before, After time.Time
}

// OnOutbox sets what an outbox hint calls: the relay's, which reports
// whether that relay leads. rows are the rows committed, when the hint
// carries them.
func (h *Hub) OnOutbox(f func(rows []Row) bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.outbox = f
}

// OnSessions sets what a sessions hint calls with its tenant.
func (h *Hub) OnSessions(f func(tenant string)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sessions = f
}

// Connect sends hints to the other processes over nc and passes theirs to
// this process's listeners. nc must be the hub's own connection, made with
// nats.NoEcho(), so that this process does not hear its own hints again;
// Connect refuses one without. Closing nc disconnects the hub.
func (h *Hub) Connect(nc *nats.Conn) error {
	if !nc.Opts.NoEcho {
		return ErrEcho
	}
	// One subscription, so that the hints of a process are handled in the
	// order it sent them.
	if _, err := nc.Subscribe(Prefix+">", func(m *nats.Msg) {
		switch m.Subject {
		case OutboxSubject:
			h.relay(nil)
		case SessionsSubject:
			if f := h.sessionsFunc(); f != nil {
				f(string(m.Data))
			}
		}
	}); err != nil {
		return err
	}
	// The subscription is in place before any hint leaves: a process
	// that started after a commit reads the outbox or the feed anyway. A
	// refusal arrives before the flush's answer; unseen, it would leave
	// this process to its polls.
	if err := nc.Flush(); err != nil {
		return err
	}
	if err := nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) {
		return fmt.Errorf("wake: hear the hints of other processes (%s): %w", Prefix+">", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nc = nc
	return nil
}

// ErrEcho is returned by Connect for a connection made without nats.NoEcho().
var ErrEcho = errors.New("wake: the hub's NATS connection must be made with nats.NoEcho()")

// Outbox hints that the outbox holds new rows, and hands over rows, all
// or some of them: to the relay of this process when it leads, else to
// every other process, one of whose relays leads and reads the rows from
// the outbox.
func (h *Hub) Outbox(rows ...Row) {
	if h == nil || h.relay(rows) {
		return
	}
	h.publish(OutboxSubject, nil)
}

// relay hints the relay of this process; it reports whether that relay
// leads.
func (h *Hub) relay(rows []Row) bool {
	h.mu.RLock()
	f := h.outbox
	h.mu.RUnlock()
	return f != nil && f(rows)
}

// Sessions hints that the sessions of each of tenants changed, to the live
// views of every process.
func (h *Hub) Sessions(tenants ...string) {
	if h == nil {
		return
	}
	f := h.sessionsFunc()
	for _, t := range tenants {
		if f != nil {
			f(t)
		}
		h.publish(SessionsSubject, []byte(t))
	}
}

func (h *Hub) sessionsFunc() func(string) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.sessions
}

func (h *Hub) publish(subject string, data []byte) {
	h.mu.RLock()
	nc := h.nc
	h.mu.RUnlock()
	if nc == nil {
		return
	}
	// Publish only buffers; it fails on a closed connection, and while
	// NATS is away the relay cannot publish either.
	if err := nc.Publish(subject, data); err != nil {
		h.log.Debug("hint not sent", "subject", subject, "err", err)
	}
}
