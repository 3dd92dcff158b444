package registry

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/evict-dev/evict/internal/testenv"
)

// TestCompleteStampsWhatEveryLiveGuardApplied runs completion rounds over
// an operation that has no targets, so that it is complete exactly when
// every live guard of its tenant applied its events, and checks both that
// the first query offers it as a candidate and that the round stamps it,
// or neither: the guards that count are the live ones, of every tenant or
// of the operation's own; an operation older than the recent window is
// left to the full rounds.
func TestCompleteStampsWhatEveryLiveGuardApplied(t *testing.T) {
	type guardRow struct {
		scope   string
		applied int64
		stale   bool // its last report is past the liveness window
	}
	tests := []struct {
		name   string
		guards []guardRow
		old    bool // accepted an hour ago
		full   bool // the round is a full one
		want   bool
	}{
		{name: "no live guard", want: true},
		{name: "every guard applied", guards: []guardRow{{"", 10, false}, {"acme", 12, false}}, want: true},
		{name: "a guard of every tenant is behind", guards: []guardRow{{"", 9, false}, {"acme", 12, false}}, want: false},
		{name: "a guard of the tenant is behind", guards: []guardRow{{"", 10, false}, {"acme", 9, false}}, want: false},
		{name: "a guard of another tenant is behind", guards: []guardRow{{"", 10, false}, {"globex", 1, false}}, want: true},
		{name: "the guard behind is not live", guards: []guardRow{{"", 10, false}, {"acme", 1, true}}, want: true},
		{name: "old, recent round", old: true, want: false},
		{name: "old, full round", old: true, full: true, want: true},
	}
	ctx := context.Background()
	pool := testenv.Pool(t, testenv.Database(t))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, q := range []string{"DELETE FROM operations", "DELETE FROM guard_instances"} {
				if _, err := pool.Exec(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			for i, g := range tt.guards {
				last := "clock_timestamp()"
				if g.stale {
					last = "clock_timestamp() - interval '1 hour'"
				}
				if _, err := pool.Exec(ctx, `INSERT INTO guard_instances (instance, scope, applied_seq, started_at, last_report_at)
					VALUES ($1, $2, $3, clock_timestamp(), `+last+`)`, fmt.Sprint("guard-", i), g.scope, g.applied); err != nil {
					t.Fatal(err)
				}
			}
			age := time.Duration(0)
			if tt.old {
				age = time.Hour
			}
			op := uuid.New()
			if _, err := pool.Exec(ctx, `INSERT INTO operations (id, tenant_id, kind, actor, response_status, response, state_seq, published_at, accepted_at)
				VALUES ($1, 'acme', 'users.logout', 'test', 202, '{}', 10, clock_timestamp(), clock_timestamp() - $2::interval)`,
				op, age.String()); err != nil {
				t.Fatal(err)
			}
			r, err := New(Config{Pool: pool})
			if err != nil {
				t.Fatal(err)
			}
			since := time.Time{}
			if !tt.full {
				r.lastFull = time.Now()
				since = r.lastFull.Add(-recentWindow)
			}
			cands, err := r.candidates(ctx, since)
			if err != nil {
				t.Fatal(err)
			}
			if offered := len(cands) == 1 && cands[0].id == op; offered != tt.want || len(cands) > 1 {
				t.Errorf("candidates %v, want the operation: %v", cands, tt.want)
			}
			if err := r.complete(ctx); err != nil {
				t.Fatal(err)
			}
			var stamped bool
			if err := pool.QueryRow(ctx, "SELECT completed_at IS NOT NULL FROM operations WHERE id = $1", op).Scan(&stamped); err != nil {
				t.Fatal(err)
			}
			if stamped != tt.want {
				t.Errorf("stamped = %v, want %v", stamped, tt.want)
			}
		})
	}
}

// TestMaxWait: an operation that stays incomplete is looked at every 2 s at
// most while young, and less often as it ages, never less than once a
// minute.
func TestMaxWait(t *testing.T) {
	tests := []struct {
		age, want time.Duration
	}{
		{0, 2 * time.Second},
		{10 * time.Second, 2 * time.Second},
		{5 * time.Minute, 30 * time.Second},
		{time.Hour, time.Minute},
	}
	for _, tt := range tests {
		if got := maxWait(tt.age); got != tt.want {
			t.Errorf("maxWait(%v) = %v, want %v", tt.age, got, tt.want)
		}
	}
}
