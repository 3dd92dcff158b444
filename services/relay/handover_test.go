package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/bus"
	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/internal/wake"
	"github.com/evict-dev/evict/services/relay"
)

// handover is a leading relay that reads the outbox only when a test
// hints without rows: its polls and heartbeats are an hour apart.
type handover struct {
	t    *testing.T
	pool *pgxpool.Pool
	js   jetstream.JetStream
	r    *relay.Relay
	reg  *prometheus.Registry
	stop func() error // stops the relay and returns what Run returned
}

func newHandover(t *testing.T, settle time.Duration) *handover {
	t.Helper()
	ctx := context.Background()
	h := &handover{t: t, pool: testenv.Pool(t, testenv.Database(t)), js: testenv.JetStream(t, testenv.NATS(t).ClientURL())}
	if err := bus.EnsureStreams(ctx, h.js, bus.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	h.start(settle)
	return h
}

// start starts a relay and waits for its first read, which publishes a
// history row written for it.
func (h *handover) start(settle time.Duration) {
	h.t.Helper()
	insertEvent(h.t, h.pool, "start")
	r, reg, stop, wait := run(h.t, relay.Config{Pool: h.pool, JetStream: h.js,
		PollInterval: time.Hour, HeartbeatInterval: time.Hour, SettleInterval: settle})
	h.r, h.reg = r, reg
	h.stop = func() error { stop(); return wait() }
	h.waitPublished(1)
}

func (h *handover) published() int {
	return int(testenv.Metric(h.t, h.reg, "evict_events_published_total"))
}

func (h *handover) waitPublished(n int) {
	h.t.Helper()
	testenv.Eventually(h.t, "published", func() bool { return h.published() >= n })
	if got := h.published(); got != n {
		h.t.Fatalf("published %d, want %d", got, n)
	}
}

// hint hands rows over to the relay, or, with none, makes it read.
func (h *handover) hint(rows ...wake.Row) {
	h.t.Helper()
	if !h.r.Hint(rows...) {
		h.t.Fatal("the relay does not lead")
	}
}

// commit writes a row of subject, as a command would, and returns it as
// the command would hand it over.
func (h *handover) commit(subject, payload string, op uuid.NullUUID) wake.Row {
	h.t.Helper()
	row := wake.Row{Operation: op, EventID: uuid.New(), Subject: subject, Payload: []byte(payload), Before: time.Now()}
	if err := h.pool.QueryRow(context.Background(), `INSERT INTO outbox (event_id, subject, payload, operation_id)
		VALUES ($1, $2, $3, $4) RETURNING seq`, row.EventID, subject, row.Payload, op).Scan(&row.Seq); err != nil {
		h.t.Fatal(err)
	}
	row.After = time.Now()
	return row
}

// operation writes an operation of one event.
func (h *handover) operation() uuid.NullUUID {
	h.t.Helper()
	id := uuid.New()
	if _, err := h.pool.Exec(context.Background(), `INSERT INTO operations (id, tenant_id, kind, actor, response_status, response, event_count)
		VALUES ($1, 't1', 'user.logout', 'test', 202, '{}', 1)`, id); err != nil {
		h.t.Fatal(err)
	}
	return uuid.NullUUID{UUID: id, Valid: true}
}

// last is the stream's message of subject.
func (h *handover) last(subject string) *jetstream.RawStreamMsg {
	h.t.Helper()
	st, err := h.js.Stream(context.Background(), events.StateStream)
	if err != nil {
		h.t.Fatal(err)
	}
	msg, err := st.GetLastMsgForSubject(context.Background(), subject)
	if err != nil {
		h.t.Fatal(err)
	}
	return msg
}

func (h *handover) outbox() (n int) {
	h.t.Helper()
	if err := h.pool.QueryRow(context.Background(), "SELECT count(*) FROM outbox").Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// settledAs checks op's published count and state sequence.
func (h *handover) settledAs(op uuid.NullUUID, stateSeq uint64) {
	h.t.Helper()
	var n int
	var seq *int64
	if err := h.pool.QueryRow(context.Background(), "SELECT published_events, state_seq FROM operations WHERE id = $1", op.UUID).
		Scan(&n, &seq); err != nil {
		h.t.Fatal(err)
	}
	if n != 1 || seq == nil || uint64(*seq) != stateSeq {
		h.t.Errorf("operation settled with %d events published, state_seq %v; want 1, %d", n, deref(seq), stateSeq)
	}
}

func stateSubject(t *testing.T, user string) string {
	t.Helper()
	s, err := events.UserStateSubject("t1", user)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRelayPublishesRowsHandedOver: a row handed over is published as it
// came, without a read of the outbox, and settled. (The payload handed
// over differs from the stored one here only to tell which was
// published; a command hands over what it stored.)
func TestRelayPublishesRowsHandedOver(t *testing.T) {
	h := newHandover(t, time.Millisecond)
	x := stateSubject(t, "alice")
	op := h.operation()
	row := h.commit(x, `{"from":"outbox"}`, op)
	row.Payload = []byte(`{"from":"hand-over"}`)
	h.hint(row)
	h.waitPublished(2)
	msg := h.last(x)
	if string(msg.Data) != `{"from":"hand-over"}` {
		t.Errorf("published %s, want the row handed over", msg.Data)
	}
	testenv.Eventually(t, "row settled", func() bool { return h.outbox() == 0 })
	h.settledAs(op, msg.Sequence)
}

// TestRelayKeepsStateOrder: a state row handed over is published at once,
// while an older row of its subject, committed by another process, waits
// in the outbox. The older one is then never published over it: not by
// the next read, and not by the next leader once the newer one is
// settled; it is settled as carried by the newer one's message.
func TestRelayKeepsStateOrder(t *testing.T) {
	x := stateSubject(t, "alice")
	t.Run("the next read", func(t *testing.T) {
		h := newHandover(t, time.Hour) // settled only when the relay stops
		older, newer := h.operation(), h.operation()
		h.commit(x, `{"v":"older"}`, older) // another process's: no hint
		h.hint(h.commit(x, `{"v":"newer"}`, newer))
		h.waitPublished(2)
		insertEvent(t, h.pool, "after") // published by the read, after the older row
		h.hint()
		h.waitPublished(3)
		if err := h.stop(); err != nil {
			t.Fatal(err)
		}
		msg := h.last(x)
		if string(msg.Data) != `{"v":"newer"}` {
			t.Fatalf("the stream keeps %s for %s, want the newer row", msg.Data, x)
		}
		if n := h.outbox(); n != 0 {
			t.Errorf("outbox holds %d rows after the relay stopped, want 0", n)
		}
		h.settledAs(older, msg.Sequence)
		h.settledAs(newer, msg.Sequence)
	})
	t.Run("the next leader", func(t *testing.T) {
		h := newHandover(t, time.Millisecond)
		older, newer := h.operation(), h.operation()
		h.commit(x, `{"v":"older"}`, older)
		h.hint(h.commit(x, `{"v":"newer"}`, newer))
		h.waitPublished(2)
		// No read runs for an hour: the settle of the newer row took the
		// older one along.
		testenv.Eventually(t, "both rows settled", func() bool { return h.outbox() == 0 })
		msg := h.last(x)
		h.settledAs(older, msg.Sequence)
		h.settledAs(newer, msg.Sequence)
		if err := h.stop(); err != nil {
			t.Fatal(err)
		}
		h.start(time.Millisecond)
		if msg := h.last(x); string(msg.Data) != `{"v":"newer"}` {
			t.Fatalf("the stream keeps %s for %s after a new leader's read, want the newer row", msg.Data, x)
		}
	})
}

// TestRelayLeavesToReadsWhatTheyMaySee: a row handed over that a read may
// have seen is left to the reads, which publish each row once.
func TestRelayLeavesToReadsWhatTheyMaySee(t *testing.T) {
	tests := []struct {
		name string
		// handOver changes the row as it is handed over; the hint
		// before it made a read if read is set.
		read     bool
		handOver func(r *wake.Row)
		want     int // messages published, the first read's included
	}{
		{"committed before the last read: that read published it", true, func(r *wake.Row) {}, 2},
		{"committed while the last read took its snapshot: a read follows", false, func(r *wake.Row) {
			r.Before, r.After = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHandover(t, time.Millisecond)
			y := stateSubject(t, "bob")
			row := h.commit(y, `{"from":"outbox"}`, uuid.NullUUID{})
			if tc.read {
				h.hint()
				h.waitPublished(2)
			}
			row.Payload = []byte(`{"from":"hand-over"}`)
			tc.handOver(&row)
			// A row of another subject, handed over with it, shows that
			// the round that took them both is over.
			z := stateSubject(t, "carol")
			h.hint(row, h.commit(z, `{}`, uuid.NullUUID{}))
			h.waitPublished(tc.want + 1)
			if msg := h.last(y); string(msg.Data) != `{"from":"outbox"}` {
				t.Errorf("published %s, want the row as read from the outbox", msg.Data)
			}
			h.last(z)
			testenv.Eventually(t, "rows settled", func() bool { return h.outbox() == 0 })
		})
	}
}

// TestRelayPublishesWhileSettling: a settle that waits, here for a lock on
// its operation's row, does not hold up the rounds: a row handed over
// meanwhile is published, and both are settled once the lock is gone.
func TestRelayPublishesWhileSettling(t *testing.T) {
	ctx := context.Background()
	h := newHandover(t, time.Millisecond)
	// The start row's settle comes first: were it still pending, it would
	// join alice's and wait for the lock with it.
	testenv.Eventually(t, "the start row settled", func() bool { return h.outbox() == 0 })
	op := h.operation()
	lock, err := h.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, "SELECT FROM operations WHERE id = $1 FOR UPDATE", op.UUID); err != nil {
		t.Fatal(err)
	}
	h.hint(h.commit(stateSubject(t, "alice"), `{}`, op))
	h.waitPublished(2)
	testenv.Eventually(t, "a settle waiting for the lock", func() bool {
		var n int
		if err := h.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'WITH gone%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	h.hint(h.commit(stateSubject(t, "bob"), `{}`, uuid.NullUUID{}))
	h.waitPublished(3)
	if n := h.outbox(); n != 2 {
		t.Errorf("outbox holds %d rows while the settle waits, want 2", n)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "rows settled", func() bool { return h.outbox() == 0 })
	h.settledAs(op, h.last(stateSubject(t, "alice")).Sequence)
}
