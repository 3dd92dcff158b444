package relay_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/bus"
	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/internal/wake"
	"github.com/evict-dev/evict/services/relay"
)

// TestRelaySettles publishes an operation's outbox rows and checks when
// they are settled (deleted, and counted on the operation): within the
// settle interval, as soon as half a batch waits, or when the relay stops;
// and that a row waiting to be settled is not published again.
func TestRelaySettles(t *testing.T) {
	tests := []struct {
		name     string
		batch    int
		interval time.Duration
		rows     int
		// whileRunning: the outbox empties before the relay stops.
		whileRunning bool
	}{
		{"within the interval", 1000, 20 * time.Millisecond, 3, true},
		{"half a batch waits", 4, time.Hour, 10, true},
		{"when it stops", 1000, time.Hour, 3, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			pool := testenv.Pool(t, testenv.Database(t))
			js := testenv.JetStream(t, testenv.NATS(t).ClientURL())
			if err := bus.EnsureStreams(ctx, js, bus.StreamConfig{}); err != nil {
				t.Fatal(err)
			}

			// One operation whose rows change users' state entries and
			// record history.
			op := uuid.New()
			if _, err := pool.Exec(ctx, `INSERT INTO operations (id, tenant_id, kind, actor, response_status, response, event_count)
				VALUES ($1, 't1', 'user.logout', 'test', 202, '{}', $2)`, op, tc.rows); err != nil {
				t.Fatal(err)
			}
			insert := func(i int) {
				t.Helper()
				subject, err := events.UserStateSubject("t1", fmt.Sprintf("u%d", i))
				if err != nil {
					t.Fatal(err)
				}
				if i%2 == 1 {
					subject = events.EventsPrefix + "t1.user.revoked"
				}
				if _, err := pool.Exec(ctx, `INSERT INTO outbox (event_id, subject, payload, operation_id) VALUES ($1, $2, $3, $4)`,
					uuid.New(), subject, fmt.Appendf(nil, `{"n":%d}`, i), op); err != nil {
					t.Fatal(err)
				}
			}
			for i := range tc.rows {
				insert(i)
			}

			r, reg, stop, wait := run(t, relay.Config{Pool: pool, JetStream: js, BatchSize: tc.batch, SettleInterval: tc.interval,
				PollInterval: 10 * time.Millisecond})

			// Acknowledged publishes, both streams.
			published := func() int { return int(testenv.Metric(t, reg, "evict_events_published_total")) }
			outbox := func() (n int) {
				if err := pool.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			testenv.Eventually(t, "every row published", func() bool { return published() >= tc.rows })
			if tc.whileRunning {
				testenv.Eventually(t, "outbox settled while running", func() bool { return outbox() == 0 })
			} else {
				// Rows that wait to be settled must be left out of the
				// rounds after theirs: one more row wakes a round.
				insert(tc.rows)
				if !r.Hint() {
					t.Fatal("the relay does not lead")
				}
				testenv.Eventually(t, "the last row published", func() bool { return published() >= tc.rows+1 })
				if n := outbox(); n != tc.rows+1 {
					t.Fatalf("outbox holds %d rows before the relay stops, want %d (an hour's settle interval)", n, tc.rows+1)
				}
				stop()
				if err := wait(); err != nil {
					t.Fatal(err)
				}
				if n := outbox(); n != 0 {
					t.Fatalf("outbox holds %d rows after the relay stopped, want 0", n)
				}
				tc.rows++
			}
			if got := published(); got != tc.rows {
				t.Errorf("published %d messages for %d rows: a row was published again", got, tc.rows)
			}
			var publishedEvents int
			var stateSeq *int64
			var publishedAt *time.Time
			if err := pool.QueryRow(ctx, "SELECT published_events, state_seq, published_at FROM operations WHERE id = $1", op).
				Scan(&publishedEvents, &stateSeq, &publishedAt); err != nil {
				t.Fatal(err)
			}
			st, err := js.Stream(ctx, events.StateStream)
			if err != nil {
				t.Fatal(err)
			}
			// The operation's state sequence is that of its last state
			// row: an even one.
			lastState, err := events.UserStateSubject("t1", fmt.Sprintf("u%d", (tc.rows-1)&^1))
			if err != nil {
				t.Fatal(err)
			}
			msg, err := st.GetLastMsgForSubject(ctx, lastState)
			if err != nil {
				t.Fatal(err)
			}
			last := msg.Sequence
			if publishedEvents != tc.rows || stateSeq == nil || uint64(*stateSeq) != last || publishedAt == nil {
				t.Errorf("operation: published_events %d, state_seq %v, published_at %v; want %d, %d, set",
					publishedEvents, deref(stateSeq), publishedAt, tc.rows, last)
			}
		})
	}
}

// run runs a relay of cfg, with a registry of its own, until stop is
// called or the test ends; wait returns what Run returned.
func run(t *testing.T, cfg relay.Config) (r *relay.Relay, reg *prometheus.Registry, stop context.CancelFunc, wait func() error) {
	t.Helper()
	reg = prometheus.NewRegistry()
	cfg.Registerer = reg
	if cfg.Logger == nil {
		cfg.Logger = testenv.Quiet
	}
	r, err := relay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	wait = sync.OnceValue(func() error { return <-done })
	t.Cleanup(func() {
		stop()
		_ = wait()
	})
	return r, reg, stop, wait
}

// insertEvent writes an outbox row of a history event about user.
func insertEvent(t *testing.T, pool *pgxpool.Pool, user string) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), `INSERT INTO outbox (event_id, subject, payload) VALUES ($1, $2, '{}')`,
		uuid.New(), events.EventsPrefix+"t1.user.revoked."+user); err != nil {
		t.Fatal(err)
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// TestRelayPublishesOnHint: with polls and heartbeats an hour apart, only a
// hint makes the leader read the outbox: one from this process (Hint),
// one that another process sent through NATS (wake.Hub.Outbox), and a
// hint sent while the relay was busy.
func TestRelayPublishesOnHint(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t, testenv.Database(t))
	url := testenv.NATS(t).ClientURL()
	js := testenv.JetStream(t, url)
	if err := bus.EnsureStreams(ctx, js, bus.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	hub := func() *wake.Hub {
		nc, err := nats.Connect(url, nats.NoEcho())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		h := wake.New(testenv.Quiet)
		if err := h.Connect(nc); err != nil {
			t.Fatal(err)
		}
		return h
	}
	local, other := hub(), hub()
	r, reg, _, _ := run(t, relay.Config{Pool: pool, JetStream: js, Wake: local,
		PollInterval: time.Hour, HeartbeatInterval: time.Hour, SettleInterval: time.Millisecond})
	testenv.Eventually(t, "leadership", func() bool { return testenv.Metric(t, reg, "evict_relay_leader") == 1 })

	published := func() int { return int(testenv.Metric(t, reg, "evict_events_published_total")) }
	for i, send := range []func(){
		func() {
			if !r.Hint() {
				t.Fatal("Hint: the relay does not lead")
			}
		},
		func() { other.Outbox() },
	} {
		insertEvent(t, pool, fmt.Sprintf("u%d", i))
		send()
		testenv.Eventually(t, fmt.Sprintf("hint %d published", i), func() bool { return published() == i+1 })
	}
	// Hints while the relay waits for a round of its own to end count:
	// the round after them reads what they announced.
	for i := range 50 {
		insertEvent(t, pool, fmt.Sprintf("burst%d", i))
		local.Outbox()
	}
	testenv.Eventually(t, "burst published", func() bool { return published() == 52 })
}

// TestRelayStopsAfterItsRound: a relay told to stop while a round's query
// waits finishes the round and settles what it published on its way out.
// Cancelling the query instead made pgx close the connection, and those
// rows stayed in the outbox for the next leader to publish again.
func TestRelayStopsAfterItsRound(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t, testenv.Database(t))
	js := testenv.JetStream(t, testenv.NATS(t).ClientURL())
	if err := bus.EnsureStreams(ctx, js, bus.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		insertEvent(t, pool, fmt.Sprintf("u%d", i))
	}
	// Rounds every 10 ms that only read: the first round's heartbeat and
	// outbox statistics are the last for an hour.
	_, reg, stop, wait := run(t, relay.Config{Pool: pool, JetStream: js,
		PollInterval: 10 * time.Millisecond, HeartbeatInterval: time.Hour, SettleInterval: time.Hour})
	testenv.Eventually(t, "rows published", func() bool { return testenv.Metric(t, reg, "evict_events_published_total") == 3 })
	// The first round's statistics, its last query but reads, are done.
	testenv.Eventually(t, "outbox statistics", func() bool { return testenv.Metric(t, reg, "evict_outbox_backlog") == 3 })

	// The next round's read waits for this lock.
	lock, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, "LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "a round waiting for the lock", func() bool {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'SELECT seq, operation_id%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	stop()
	// Long enough for a cancelled query to have closed the connection;
	// the lock is released after the stop either way.
	time.Sleep(100 * time.Millisecond)
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("outbox holds %d rows after the relay stopped, want 0: what it published was not settled", n)
	}
}
