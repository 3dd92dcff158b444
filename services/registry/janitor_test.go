package registry

import (
	"context"
	"testing"

	"github.com/evict-dev/evict/internal/testenv"
)

// TestSweepMarksOneTenantInSteps: a tenant-wide logout of a tenant of 2,500
// live sessions is swept 1,000 sessions a step; the step that finds fewer
// marks the tenant swept, and later steps leave it alone. A session issued
// after the logout, one already ended, and another tenant's are not
// touched. A newer logout makes the tenant sweepable again.
func TestSweepMarksOneTenantInSteps(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t, testenv.Database(t))
	for _, q := range []string{
		"INSERT INTO tenants (id) VALUES ('acme'), ('globex')",
		`UPDATE tenants SET not_before = clock_timestamp(), not_before_cause = 'tenant_logout' WHERE id = 'acme'`,
		`INSERT INTO sessions (tenant_id, session_id, user_id, client, issued_at)
			SELECT 'acme', 's' || i, 'u' || i, 'web', clock_timestamp() - interval '1 hour' FROM generate_series(1, 2500) i`,
		`INSERT INTO sessions (tenant_id, session_id, user_id, client, issued_at, ended_at) VALUES
			('acme', 'ended', 'u', 'web', clock_timestamp() - interval '1 hour', clock_timestamp() - interval '1 minute'),
			('acme', 'later', 'u', 'web', clock_timestamp() + interval '1 minute', NULL),
			('globex', 'other', 'u', 'web', clock_timestamp() - interval '1 hour', NULL)`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	r, err := New(Config{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	state := func() (marked int, swept bool) {
		t.Helper()
		if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM sessions WHERE revoke_cause = 'tenant_logout'),
			(SELECT not_before_swept FROM tenants WHERE id = 'acme')`).Scan(&marked, &swept); err != nil {
			t.Fatal(err)
		}
		return marked, swept
	}
	for _, want := range []struct {
		marked int
		swept  bool
	}{{1000, false}, {2000, false}, {2500, true}, {2500, true}} {
		if err := r.sweep(ctx); err != nil {
			t.Fatal(err)
		}
		if marked, swept := state(); marked != want.marked || swept != want.swept {
			t.Fatalf("after a step: %d marked, swept %v; want %d, %v", marked, swept, want.marked, want.swept)
		}
	}
	var untouched int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM sessions WHERE session_id IN ('ended', 'later', 'other') AND revoked_at IS NULL`).Scan(&untouched); err != nil || untouched != 3 {
		t.Fatalf("%d of the sessions the logout does not cover left alone, want 3 (%v)", untouched, err)
	}

	// A newer logout, as the admin API writes it, covers the later session.
	if _, err := pool.Exec(ctx, `UPDATE tenants SET not_before = clock_timestamp() + interval '2 minutes', not_before_swept = false WHERE id = 'acme'`); err != nil {
		t.Fatal(err)
	}
	if err := r.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if marked, swept := state(); marked != 2501 || !swept {
		t.Fatalf("after the newer logout: %d marked, swept %v; want 2501, true", marked, swept)
	}
}
