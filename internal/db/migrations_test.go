package db_test

import (
	"context"
	"slices"
	"testing"

	"github.com/evict-dev/evict/internal/testenv"
)

// TestOperationsVacuumSoon checks that the migrations leave operations
// with its own autovacuum threshold (migration 0011): the completer reads
// the entries its vacuum removes.
func TestOperationsVacuumSoon(t *testing.T) {
	pool := testenv.Pool(t, testenv.Database(t))
	var opts []string
	if err := pool.QueryRow(context.Background(), "SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = 'operations'::regclass").Scan(&opts); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(opts, "autovacuum_vacuum_scale_factor=0.01") {
		t.Errorf("operations has reloptions %q, want autovacuum_vacuum_scale_factor=0.01", opts)
	}
}

// TestRowChecksLeftToWriters checks migration 0012: inserting watermarks
// and targets runs no trigger per row (their foreign keys ran one each,
// 360 ms of a 100,000-user bulk logout's 880), and deleting a tenant or an
// operation still deletes its watermarks or targets, and no one else's.
func TestRowChecksLeftToWriters(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t, testenv.Database(t))
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`INSERT INTO tenants (id) VALUES ('acme'), ('globex')`)
	ops := []string{"0192f0c4-7d1e-7c3a-9b2e-5f1d2a3b4c01", "0192f0c4-7d1e-7c3a-9b2e-5f1d2a3b4c02"}
	for _, op := range ops {
		exec(`INSERT INTO operations (id, tenant_id, kind, actor, response_status, response) VALUES ($1, 'acme', 'logout_user', 'test', 202, '{}')`, op)
	}
	for _, c := range []struct {
		name string
		sql  string
		args []any
	}{
		{"watermarks", `INSERT INTO user_watermarks (tenant_id, user_id, not_before, operation_id, cause)
			SELECT t, 'u' || i, now(), $1, 'logout' FROM unnest(ARRAY['acme', 'globex']) t, generate_series(1, 100) i`, []any{ops[0]}},
		{"targets", `INSERT INTO operation_targets (operation_id, tenant_id, session_id, user_id, client)
			SELECT o::uuid, 'acme', 's' || i, 'u' || i, 'web' FROM unnest($1::text[]) o, generate_series(1, 100) i`, []any{ops}},
	} {
		// Immediate, so that a deferred check would run in the statement
		// and show in its plan.
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var plan []map[string]any
		if _, err := tx.Exec(ctx, "SET CONSTRAINTS ALL IMMEDIATE"); err != nil {
			t.Fatal(err)
		}
		if err := tx.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+c.sql, c.args...).Scan(&plan); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if trig, ok := plan[0]["Triggers"].([]any); !ok || len(trig) != 0 {
			t.Errorf("inserting %s ran triggers %v, want none", c.name, plan[0]["Triggers"])
		}
	}
	count := func(sql string) int {
		t.Helper()
		var n int
		if err := pool.QueryRow(ctx, sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	exec(`DELETE FROM operations WHERE id = $1`, ops[0])
	if n := count(`SELECT count(*) FROM operation_targets WHERE operation_id = '` + ops[0] + `'`); n != 0 {
		t.Errorf("%d targets of a deleted operation left, want 0", n)
	}
	if n := count(`SELECT count(*) FROM operation_targets WHERE operation_id = '` + ops[1] + `'`); n != 100 {
		t.Errorf("another operation kept %d targets, want 100", n)
	}
	exec(`DELETE FROM tenants WHERE id = 'acme'`)
	if n := count(`SELECT count(*) FROM user_watermarks WHERE tenant_id = 'acme'`); n != 0 {
		t.Errorf("%d watermarks of a deleted tenant left, want 0", n)
	}
	if n := count(`SELECT count(*) FROM user_watermarks WHERE tenant_id = 'globex'`); n != 100 {
		t.Errorf("another tenant kept %d watermarks, want 100", n)
	}
}
