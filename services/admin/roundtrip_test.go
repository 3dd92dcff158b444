package admin

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/db"
	"github.com/evict-dev/evict/internal/testenv"
)

// roundTrips counts what a connection sends to PostgreSQL and waits for:
// each Query, QueryRow, Exec and SendBatch is one round trip.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	r.n.Add(1)
	return ctx
}
func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.n.Add(1)
	return ctx
}
func (r *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// TestUserLogoutIsOneRoundTrip: a command that logs out one user sends
// everything from BEGIN to COMMIT, and the relay's wake-up, at once, and
// its event and its targets still carry the watermark PostgreSQL stored.
func TestUserLogoutIsOneRoundTrip(t *testing.T) {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	rt := &roundTrips{}
	cfg.ConnConfig.Tracer = rt
	// A ping before a command would be a round trip of its own.
	cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
	pool, err := db.NewPool(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := newTestServer(t, pool, "tok")
	if _, err := pool.Exec(ctx, "INSERT INTO tenants (id) VALUES ('acme')"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO sessions (tenant_id, session_id, user_id, client, issued_at)
		SELECT 'acme', s, u, 'web', clock_timestamp() FROM (VALUES ('a1', 'alice'), ('a2', 'alice'), ('b1', 'bob')) v(s, u)`); err != nil {
		t.Fatal(err)
	}
	logout := func(user string) {
		t.Helper()
		req := httptest.NewRequest("POST", "/v1/tenants/acme/users/"+user+"/logout", nil)
		req.Header.Set("Authorization", "Bearer tok")
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if w.Code != http.StatusAccepted {
			t.Fatalf("logout of %s: %d %s", user, w.Code, w.Body)
		}
	}
	// The first command of a connection also prepares its statements.
	logout("carol")
	// A watermark already later than the command's clock is kept, and the
	// event and the targets must carry it.
	ahead := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	if _, err := pool.Exec(ctx, "UPDATE user_watermarks SET not_before = $1 WHERE user_id = 'carol'", ahead); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO sessions (tenant_id, session_id, user_id, client, issued_at)
		VALUES ('acme', 'c1', 'carol', 'web', clock_timestamp())`); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user     string
		sessions int
	}{{"alice", 2}, {"bob", 1}, {"carol", 1}} {
		user := c.user
		rt.n.Store(0)
		logout(user)
		if n := rt.n.Load(); n != 1 {
			t.Errorf("logout of %s: %d round trips, want 1", user, n)
		}

		var stored time.Time
		var payload []byte
		var revoked []time.Time
		if err := pool.QueryRow(ctx, `SELECT w.not_before, o.payload, array(SELECT s.revoked_at FROM sessions s
				WHERE s.revoke_operation = w.operation_id ORDER BY s.session_id)
			FROM user_watermarks w JOIN outbox o ON o.operation_id = w.operation_id
			WHERE w.tenant_id = 'acme' AND w.user_id = $1`, user).Scan(&stored, &payload, &revoked); err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		if user == "carol" && !stored.Equal(ahead) {
			t.Errorf("carol's watermark %v, want the later one kept, %v", stored, ahead)
		}
		if len(revoked) != c.sessions {
			t.Errorf("%s: %d sessions revoked, want %d", user, len(revoked), c.sessions)
		}
		ev, err := events.DecodeRevocation(payload)
		if err != nil {
			t.Fatalf("%s: event %s: %v", user, payload, err)
		}
		if ev.Kind != events.KindUser || ev.ID != user || !ev.At.Equal(stored) || !ev.EventTime.Equal(stored) {
			t.Errorf("%s: event %+v, want user %s's watermark %v as not_before and time", user, ev, user, stored)
		}
		for i, at := range revoked {
			if !at.Equal(stored) {
				t.Errorf("%s: session %d revoked at %v, want the watermark %v", user, i, at, stored)
			}
		}
	}
}

func TestOneStoredWatermarkPerCommand(t *testing.T) {
	tests := []struct {
		name       string
		waiting    []string // watermarkOf of each row
		wantErr    bool
		statements int
	}{
		{"none", []string{"", ""}, false, 1},
		{"one", []string{"", "alice"}, false, 1},
		{"two", []string{"alice", "bob"}, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rows []outboxRow
			for _, u := range tt.waiting {
				rows = append(rows, outboxRow{subject: "evict.x", payload: []byte("{}"), watermarkOf: u})
			}
			var b pgx.Batch
			_, err := queueOutbox(&b, "acme", uuid.NullUUID{}, rows)
			if (err != nil) != tt.wantErr {
				t.Fatalf("queueOutbox: %v, want error %v", err, tt.wantErr)
			}
			if b.Len() != tt.statements {
				t.Errorf("%d statements queued, want %d", b.Len(), tt.statements)
			}
		})
	}
}
