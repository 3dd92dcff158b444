package admin

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evict-dev/evict/internal/db"
	"github.com/evict-dev/evict/internal/testenv"
)

// TestCommitsCombine: logouts of one user that come while a commit is under
// way commit together, in one transaction, once it ends; when one of them
// fails that transaction, each is run again alone, so that it alone fails
// and every other commits once.
func TestCommitsCombine(t *testing.T) {
	type logout struct{ tenant, user string }
	tests := []struct {
		name   string
		queued []logout
		want   []int // status of each queued logout
		// transactions is how many transactions committed the operations,
		// the first logout's included.
		transactions int
	}{
		{
			name:         "queued logouts commit together",
			queued:       []logout{{"acme", "u5"}, {"acme", "u1"}, {"acme", "u3"}, {"corp", "u1"}, {"acme", "u3"}},
			want:         []int{202, 202, 202, 202, 202},
			transactions: 2,
		},
		{
			// The logout of the tenant that does not exist sorts between
			// the others, so its failure aborts statements on both sides.
			name:         "a failed logout fails alone",
			queued:       []logout{{"corp", "u9"}, {"bogus", "u2"}, {"acme", "u1"}},
			want:         []int{202, 404, 202},
			transactions: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			pool := newTestPool(t)
			s := newTestServer(t, pool, "tok")
			if _, err := pool.Exec(ctx, `INSERT INTO tenants (id) VALUES ('acme'), ('corp');
				INSERT INTO sessions (tenant_id, session_id, user_id, client, issued_at)
				SELECT t, t || '-' || u || '-' || n, u, 'web', clock_timestamp()
				FROM unnest(ARRAY['acme', 'corp']) t, unnest(ARRAY['u0', 'u1', 'u3', 'u5', 'u9']) u, generate_series(1, 2) n`); err != nil {
				t.Fatal(err)
			}
			post := func(l logout) int {
				req := httptest.NewRequest("POST", "/v1/tenants/"+l.tenant+"/users/"+l.user+"/logout", nil)
				req.Header.Set("Authorization", "Bearer tok")
				w := httptest.NewRecorder()
				s.ServeHTTP(w, req)
				return w.Code
			}

			// The first logout's commit waits for acme's row, which the
			// test holds; the others come meanwhile.
			blocker, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer blocker.Rollback(context.WithoutCancel(ctx))
			if _, err := blocker.Exec(ctx, "SELECT FROM tenants WHERE id = 'acme' FOR UPDATE"); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			first := make(chan int, 1)
			wg.Go(func() { first <- post(logout{"acme", "u0"}) })
			waitFor(t, "the first logout to wait for the lock", func() bool {
				var n int
				err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
					WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
				return err == nil && n == 1
			})
			got := make([]int, len(tt.queued))
			for i, l := range tt.queued {
				wg.Go(func() { got[i] = post(l) })
			}
			waitFor(t, "the logouts to queue", func() bool {
				s.combine.mu.Lock()
				defer s.combine.mu.Unlock()
				return len(s.combine.queue) == len(tt.queued)
			})
			if err := blocker.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			wg.Wait()

			if code := <-first; code != http.StatusAccepted {
				t.Errorf("first logout: %d, want 202", code)
			}
			accepted := 1
			for i, code := range got {
				if code != tt.want[i] {
					t.Errorf("logout %v: %d, want %d", tt.queued[i], code, tt.want[i])
				}
				if code == http.StatusAccepted {
					accepted++
				}
			}
			// Each accepted logout committed once, with its event, and no
			// more: nothing of the failed transaction is left.
			var ops, events, transactions, unrevoked int
			if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM operations),
				(SELECT count(*) FROM outbox o JOIN operations p ON p.id = o.operation_id),
				(SELECT count(DISTINCT xmin::text) FROM operations),
				(SELECT count(*) FROM sessions s JOIN user_watermarks w USING (tenant_id, user_id) WHERE s.revoked_at IS NULL)`).
				Scan(&ops, &events, &transactions, &unrevoked); err != nil {
				t.Fatal(err)
			}
			if ops != accepted || events != accepted {
				t.Errorf("%d operations with %d events, want %d of each", ops, events, accepted)
			}
			if transactions != tt.transactions {
				t.Errorf("operations committed by %d transactions, want %d", transactions, tt.transactions)
			}
			if unrevoked != 0 {
				t.Errorf("%d sessions of logged-out users not revoked", unrevoked)
			}
			for i, l := range tt.queued {
				var n int
				if err := pool.QueryRow(ctx, `SELECT count(*) FROM user_watermarks WHERE tenant_id = $1 AND user_id = $2`,
					l.tenant, l.user).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if (n == 1) != (tt.want[i] == http.StatusAccepted) {
					t.Errorf("logout %v answered %d, and its watermark rows are %d", l, got[i], n)
				}
			}
		})
	}
}

// newTestPool is a pool on a database of its own, closed when t ends.
func newTestPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := db.NewPool(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestCombinedCommitPanic: when the command that commits a combined batch
// panics, which net/http recovers from, the others of the batch are told
// to run again alone, not that they committed, and the next commit does
// not wait for it.
func TestCombinedCommitPanic(t *testing.T) {
	ctx := t.Context()
	pool := newTestPool(t)
	c := &combiner{size: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "size"})}
	tx := func(key, sql string, result func(pgx.BatchResults) error) *cmdTx {
		t := &cmdTx{pool: pool, combine: c, key: key}
		t.defer_("begin", nil, execResult)
		t.defer_(sql, nil, result)
		return t
	}

	// The first commit waits for an advisory lock the test holds; the
	// panicking command and another queue behind it.
	holder, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Release()
	if _, err := holder.Exec(ctx, "SELECT pg_advisory_lock(42)"); err != nil {
		t.Fatal(err)
	}
	first := tx("a", "SELECT pg_advisory_xact_lock(42)", execResult)
	// Keys sort the panicking command first: it leads the batch.
	panicking := tx("b", "SELECT 1", func(pgx.BatchResults) error { panic("boom") })
	other := tx("c", "SELECT 1", execResult)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	var recovered any
	wg.Go(func() { errs[0] = first.commit(ctx, &pgx.Batch{}) })
	waitFor(t, "the first commit", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.busy
	})
	wg.Go(func() {
		defer func() { recovered = recover() }()
		errs[1] = panicking.commit(ctx, &pgx.Batch{})
	})
	waitFor(t, "the panicking command to queue", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.queue) == 1
	})
	wg.Go(func() { errs[2] = other.commit(ctx, &pgx.Batch{}) })
	waitFor(t, "the other command to queue", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.queue) == 2
	})
	if _, err := holder.Exec(ctx, "SELECT pg_advisory_unlock(42)"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	// inCmdTx would release their connections.
	for _, t := range []*cmdTx{first, panicking, other} {
		if t.pc != nil {
			t.pc.Release()
		}
	}

	if errs[0] != nil {
		t.Errorf("first commit: %v", errs[0])
	}
	if recovered != "boom" {
		t.Errorf("the leader's panic: %v, want boom", recovered)
	}
	if !errors.Is(errs[2], errAlone) {
		t.Errorf("the other command of the batch: %v, want errAlone", errs[2])
	}
	// Nothing is left committing: the next command commits at once.
	next := tx("d", "SELECT 1", execResult)
	if err := next.commit(ctx, &pgx.Batch{}); err != nil {
		t.Errorf("the next commit: %v", err)
	}
	if next.pc != nil {
		next.pc.Release()
	}
}
