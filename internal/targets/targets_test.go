package targets_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/evict-dev/evict/internal/targets"
	"github.com/evict-dev/evict/internal/testenv"
)

// TestRecordAllFinishesWhatACrashLeft: a bulk logout committed its
// watermarks and left its 2,500 users' targets pending, as a replica that
// died right after the commit leaves them. Two recorders then run at once,
// as a restarted replica and another replica's periodic round would. The
// sessions issued before the watermark and still live are marked revoked by
// the operation, recorded as its targets and appended to the feed, each
// exactly once, in three slices; the others are left alone.
func TestRecordAllFinishesWhatACrashLeft(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t, testenv.Database(t))
	const users = 2500
	nb := time.Now().UTC().Truncate(time.Microsecond)
	op := uuid.New()
	setup := []struct {
		sql  string
		args []any
	}{
		{"INSERT INTO tenants (id) VALUES ('acme')", nil},
		// Per user: a web session to revoke, a session already ended, and
		// a session issued after the watermark (a login after the logout).
		{`INSERT INTO sessions (tenant_id, session_id, user_id, client, issued_at, ended_at)
			SELECT 'acme', 'web-' || i, 'u' || lpad(i::text, 5, '0'), 'web', $1::timestamptz - interval '1 hour', NULL FROM generate_series(1, $2::int) i
			UNION ALL
			SELECT 'acme', 'old-' || i, 'u' || lpad(i::text, 5, '0'), 'web', $1::timestamptz - interval '2 hours', $1::timestamptz - interval '1 hour' FROM generate_series(1, $2::int) i
			UNION ALL
			SELECT 'acme', 'new-' || i, 'u' || lpad(i::text, 5, '0'), 'web', $1::timestamptz + interval '1 second', NULL FROM generate_series(1, $2::int) i`,
			[]any{nb, users}},
		// A session of a user the logout did not name.
		{`INSERT INTO sessions (tenant_id, session_id, user_id, client, issued_at) VALUES ('acme', 'other', 'bystander', 'web', $1::timestamptz - interval '1 hour')`, []any{nb}},
		{`INSERT INTO operations (id, tenant_id, kind, actor, response_status, response) VALUES ($1, 'acme', 'users.logout', 'test', 202, '{}')`, []any{op}},
		{`INSERT INTO pending_targets (operation_id, tenant_id, users, not_before, cause, reason)
			SELECT $1, 'acme', array_agg('u' || lpad(i::text, 5, '0') ORDER BY i), $2, 'logout', 'incident 7' FROM generate_series(1, $3::int) i`,
			[]any{op, nb, users}},
	}
	for _, s := range setup {
		if _, err := pool.Exec(ctx, s.sql, s.args...); err != nil {
			t.Fatalf("%s: %v", s.sql, err)
		}
	}

	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if err := targets.RecordAll(ctx, pool, nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// Whichever recorder found the row locked gave up on it; make sure
	// nothing is left for a third.
	if err := targets.RecordAll(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		what string
		sql  string
		args []any
		want int
	}{
		{"pending rows", "SELECT count(*) FROM pending_targets", nil, 0},
		{"targets", "SELECT count(*) FROM operation_targets WHERE operation_id = $1", []any{op}, users},
		{"targets that are not web sessions", "SELECT count(*) FROM operation_targets WHERE operation_id = $1 AND session_id NOT LIKE 'web-%'", []any{op}, 0},
		{"sessions revoked by the operation at the watermark",
			"SELECT count(*) FROM sessions WHERE revoke_operation = $1 AND revoked_at = $2 AND revoke_cause = 'logout' AND revoke_reason = 'incident 7'",
			[]any{op, nb}, users},
		{"sessions revoked otherwise", "SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL AND revoke_operation IS DISTINCT FROM $1", []any{op}, 0},
		{"feed entries", "SELECT count(*) FROM session_changes WHERE kind = 'revoked' AND detail->>'operation_id' = $1", []any{op.String()}, users},
		{"sessions in the feed twice", "SELECT count(*) FROM (SELECT session_id FROM session_changes GROUP BY session_id HAVING count(*) > 1) d", nil, 0},
	} {
		var n int
		if err := pool.QueryRow(ctx, c.sql, c.args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		if n != c.want {
			t.Errorf("%s: %d, want %d", c.what, n, c.want)
		}
	}
}
