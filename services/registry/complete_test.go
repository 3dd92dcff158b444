package registry

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

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
			window := time.Duration(0)
			if !tt.full {
				r.lastFull = time.Now()
				window = recentWindow
			}
			cands, err := r.candidates(ctx, window, nil)
			if err != nil {
				t.Fatal(err)
			}
			if offered := len(cands) == 1 && cands[0].id == op && cands[0].checked && cands[0].complete; offered != tt.want || len(cands) > 1 {
				t.Errorf("candidates %v, want the operation, complete: %v", cands, tt.want)
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

// TestCompletionAgreesWithStatus sets up one operation whose events every
// live guard applied, with one target in each case below, and checks that
// the completer's query (candidatesSQL) and the operation's status
// (Operation, which lists every target) both say what the case wants:
// the two compute completion each their own way, and must agree.
func TestCompletionAgreesWithStatus(t *testing.T) {
	type report struct {
		instance, scope string
		applied         int64
		live            bool
	}
	tests := []struct {
		name        string
		tenantWide  bool
		holder      string // "" for a session registered without one
		termination string
		expired     bool
		reports     []report
		want        bool
	}{
		{name: "holder applied", holder: "web-1", reports: []report{{"web-1", "", 10, true}}, want: true},
		{name: "holder down, behind", holder: "web-1", reports: []report{{"web-1", "", 9, false}}, want: false},
		{name: "holder down, applied before it went", holder: "web-1", reports: []report{{"web-1", "", 10, false}}, want: true},
		{name: "holder applied as a guard of the tenant", holder: "web-1", reports: []report{{"web-1", "acme", 10, true}}, want: true},
		{name: "holder applied only for another tenant", holder: "web-1", reports: []report{{"web-1", "globex", 10, false}}, want: false},
		{name: "holder never reported", holder: "web-1", want: false},
		// Reports are stored in order, so the last listed is the latest.
		{name: "holder's latest report behind", holder: "web-1",
			reports: []report{{"web-1", "", 10, false}, {"web-1", "acme", 9, false}}, want: false},
		{name: "holder's latest report applied", holder: "web-1",
			reports: []report{{"web-1", "", 9, false}, {"web-1", "acme", 10, false}}, want: true},
		{name: "deferred", holder: "web-1", termination: "deferred", reports: []report{{"web-1", "", 10, true}}, want: false},
		{name: "terminated", holder: "web-1", termination: "terminated", want: true},
		{name: "expired", holder: "web-1", expired: true, want: true},
		{name: "no holder, a live guard applied", reports: []report{{"web-1", "", 10, true}}, want: true},
		{name: "no holder, no live guard", reports: []report{{"web-1", "", 10, false}}, want: false},
		{name: "no holder, live guard of another tenant only", reports: []report{{"web-1", "globex", 1, true}}, want: false},
		{name: "tenant-wide, a live guard applied", tenantWide: true, reports: []report{{"web-1", "", 10, true}}, want: true},
		{name: "tenant-wide, holder down behind", tenantWide: true, holder: "web-2",
			reports: []report{{"web-1", "", 10, true}, {"web-2", "", 9, false}}, want: false},
	}
	// Each case holds for a tenant-wide logout too, whose sessions the
	// completer reads apart from targets, with each holder's report looked
	// up once.
	for _, tt := range tests {
		if !tt.tenantWide {
			tt.name, tt.tenantWide = "tenant-wide, "+tt.name, true
			tests = append(tests, tt)
		}
	}
	ctx := context.Background()
	pool := testenv.Pool(t, testenv.Database(t))
	if _, err := pool.Exec(ctx, "INSERT INTO tenants (id) VALUES ('acme')"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, q := range []string{"DELETE FROM operations", "DELETE FROM guard_instances", "DELETE FROM sessions"} {
				if _, err := pool.Exec(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			for _, g := range tt.reports {
				last := "clock_timestamp()"
				if !g.live {
					last = "clock_timestamp() - interval '1 hour'"
				}
				if _, err := pool.Exec(ctx, `INSERT INTO guard_instances (instance, scope, applied_seq, started_at, last_report_at)
					VALUES ($1, $2, $3, clock_timestamp(), `+last+`)`, g.instance, g.scope, g.applied); err != nil {
					t.Fatal(err)
				}
			}
			var holder, termination *string
			if tt.holder != "" {
				holder = &tt.holder
			}
			if tt.termination != "" {
				termination = &tt.termination
			}
			expires := "NULL::timestamptz"
			if tt.expired {
				expires = "clock_timestamp() - interval '1 minute'"
			}
			op := uuid.New()
			targets := `{"user_count": 1}`
			if tt.tenantWide {
				targets = `{"tenant": true, "user_count": 0}`
			}
			for _, q := range []struct {
				sql  string
				args []any
			}{
				{`INSERT INTO sessions (tenant_id, session_id, user_id, client, issued_at, registered_at, holder, termination, expires_at)
					VALUES ('acme', 's1', 'bob', 'web', clock_timestamp() - interval '1 hour', clock_timestamp() - interval '1 hour', $1, $2, ` + expires + `)`,
					[]any{holder, termination}},
				{`INSERT INTO operations (id, tenant_id, kind, actor, response_status, response, targets, state_seq, published_at, accepted_at)
					VALUES ($1, 'acme', 'users.logout', 'test', 202, '{}', $2, 10, clock_timestamp(), clock_timestamp())`, []any{op, targets}},
			} {
				if _, err := pool.Exec(ctx, q.sql, q.args...); err != nil {
					t.Fatal(err)
				}
			}
			if !tt.tenantWide {
				if _, err := pool.Exec(ctx, `INSERT INTO operation_targets (operation_id, tenant_id, session_id, user_id, client, holder)
					VALUES ($1, 'acme', 's1', 'bob', 'web', $2)`, op, holder); err != nil {
					t.Fatal(err)
				}
			}
			r, c := soleCandidate(t, pool)
			if c.id != op || !c.checked {
				t.Fatalf("candidate %+v, want the operation, checked", c)
			}
			st, err := r.Operation(ctx, op)
			if err != nil {
				t.Fatal(err)
			}
			if c.complete != tt.want || (st.Summary == SummaryCompleted) != tt.want {
				t.Errorf("completer says complete=%v, status says %s (targets %+v); want complete=%v",
					c.complete, st.Summary, st.Targets, tt.want)
			}
			// An operation waiting out its backoff is offered, not checked.
			cands, err := r.candidates(ctx, 0, [][16]byte{op})
			if err != nil {
				t.Fatal(err)
			}
			if len(cands) != 1 || cands[0].checked || cands[0].complete {
				t.Errorf("skipped: candidates %v, want the operation, unchecked", cands)
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

// TestOneTenantWideCheckARound: each round checks every due operation but
// one tenant-wide operation only, the oldest due, since each reads all the
// sessions of its tenant; the others are offered unchecked and have their
// turn in the rounds after.
func TestOneTenantWideCheckARound(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t, testenv.Database(t))
	insert := func(targets string, age time.Duration) uuid.UUID {
		t.Helper()
		op := uuid.New()
		if _, err := pool.Exec(ctx, `INSERT INTO operations (id, tenant_id, kind, actor, response_status, response, targets, state_seq, published_at, accepted_at)
			VALUES ($1, 'acme', 'users.logout', 'test', 202, '{}', $2, 10, clock_timestamp(), clock_timestamp() - $3::interval)`,
			op, targets, age.String()); err != nil {
			t.Fatal(err)
		}
		return op
	}
	const wide, users = `{"tenant": true, "user_count": 0}`, `{"user_count": 1}`
	wides := []uuid.UUID{insert(wide, 3*time.Second), insert(wide, 2*time.Second), insert(wide, time.Second)}
	targeted := []uuid.UUID{insert(users, 3*time.Second), insert(users, 0)}
	r, err := New(Config{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	checked := func(skip [][16]byte) map[uuid.UUID]bool {
		t.Helper()
		cands, err := r.candidates(ctx, 0, skip)
		if err != nil {
			t.Fatal(err)
		}
		got := map[uuid.UUID]bool{}
		for _, c := range cands {
			got[c.id] = c.checked
		}
		return got
	}
	for _, tc := range []struct {
		name string
		skip [][16]byte
		want uuid.UUID // the one tenant-wide operation checked
	}{
		{"the oldest", nil, wides[0]},
		{"the oldest due", [][16]byte{wides[0]}, wides[1]},
	} {
		got := checked(tc.skip)
		for _, op := range wides {
			if got[op] != (op == tc.want) {
				t.Errorf("%s: tenant-wide %s checked = %v, want %v", tc.name, op, got[op], op == tc.want)
			}
		}
		for _, op := range targeted {
			if !got[op] {
				t.Errorf("%s: targeted operation %s not checked", tc.name, op)
			}
		}
	}
	// Each round stamps the oldest tenant-wide operation (none has a
	// session left to enforce), so three rounds stamp them all.
	for round := 1; round <= len(wides); round++ {
		r.lastFull = time.Time{} // a full round: the operations are older than the recent window
		if err := r.complete(ctx); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM operations WHERE completed_at IS NOT NULL AND id = ANY($1)", wides).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != round {
			t.Errorf("after round %d, %d tenant-wide operations stamped, want %d", round, n, round)
		}
	}
}

// TestRecentRoundReadsItsWindow checks that a recent round reads the
// operations of its window only, through the index, and not every
// incomplete operation there is: with 5,000 of them accepted an hour ago,
// the round's plan reads the one recent operation. Its bound was once
// clock_timestamp(), which is no index condition, and every round read the
// whole index.
func TestRecentRoundReadsItsWindow(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t, testenv.Database(t))
	if _, err := pool.Exec(ctx, `INSERT INTO operations (id, tenant_id, kind, actor, response_status, response, state_seq, published_at, accepted_at)
		SELECT gen_random_uuid(), 'acme', 'users.logout', 'test', 202, '{}', 10, clock_timestamp(), clock_timestamp() - interval '1 hour'
		FROM generate_series(1, 5000)`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO operations (id, tenant_id, kind, actor, response_status, response, state_seq, published_at)
		VALUES (gen_random_uuid(), 'acme', 'users.logout', 'test', 202, '{}', 10, clock_timestamp())`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "ANALYZE operations"); err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	var plan []struct {
		Plan planNode
	}
	within := fmt.Sprintf("%d milliseconds", recentWindow.Milliseconds())
	if err := pool.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+candidatesSQL, r.liveInterval(), within, [][16]byte{}).Scan(&plan); err != nil {
		t.Fatal(err)
	}
	if len(plan) != 1 {
		t.Fatalf("plan: %+v", plan)
	}
	read := 0
	plan[0].Plan.walk(func(n planNode) {
		if n.Relation == "operations" || n.Index == "operations_incomplete" {
			read = max(read, n.Rows+n.Removed)
		}
	})
	if read == 0 || read > 10 {
		t.Errorf("a recent round read %d rows of operations or of its index at once, want 1 (the one recent operation of 5,001)", read)
	}
}

// TestTenantWideCheckReadsReportsOnce: checking a tenant-wide logout
// looks up each holder's latest report once, not once per session of the
// tenant: with 2,000 sessions on four holders, the check's plan reads a
// handful of guard_instances rows. As a subquery per session it read
// 2,000 times as many, and a check of a tenant of a million sessions took
// 2.2 s instead of 0.3 s.
func TestTenantWideCheckReadsReportsOnce(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t, testenv.Database(t))
	for _, q := range []string{
		`INSERT INTO tenants (id) VALUES ('acme')`,
		`INSERT INTO sessions (tenant_id, session_id, user_id, client, issued_at, registered_at, holder)
			SELECT 'acme', 's' || i, 'u' || i, 'web', clock_timestamp() - interval '1 hour', clock_timestamp() - interval '1 hour', 'web-' || i % 4
			FROM generate_series(1, 2000) i`,
		`INSERT INTO guard_instances (instance, scope, applied_seq, started_at, last_report_at)
			SELECT 'web-' || i, '', 10, clock_timestamp(), clock_timestamp() FROM generate_series(0, 3) i`,
		`INSERT INTO operations (id, tenant_id, kind, actor, response_status, response, targets, state_seq, published_at)
			VALUES (gen_random_uuid(), 'acme', 'tenant.logout', 'test', 202, '{}', '{"tenant": true}', 10, clock_timestamp())`,
		`ANALYZE`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	r, c := soleCandidate(t, pool)
	if !c.checked || !c.complete {
		t.Fatalf("candidate %+v, want the tenant-wide operation, checked and complete", c)
	}
	var plan []struct {
		Plan planNode
	}
	if err := pool.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+candidatesSQL, r.liveInterval(), "100 years", [][16]byte{}).Scan(&plan); err != nil {
		t.Fatal(err)
	}
	if len(plan) != 1 {
		t.Fatalf("plan: %+v", plan)
	}
	read := 0
	plan[0].Plan.walk(func(n planNode) {
		if n.Relation == "guard_instances" {
			read += (n.Rows + n.Removed) * n.Loops
		}
	})
	if read == 0 || read > 100 {
		t.Errorf("the check read %d guard_instances rows for 2,000 sessions on 4 holders, want a handful", read)
	}
}

// soleCandidate returns a registry on pool and the one operation its
// completer offers; it fails the test when it offers another number.
func soleCandidate(t *testing.T, pool *pgxpool.Pool) (*Registry, candidate) {
	t.Helper()
	r, err := New(Config{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	cands, err := r.candidates(context.Background(), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cands) != 1 {
		t.Fatalf("candidates %+v, want one", cands)
	}
	return r, cands[0]
}

// planNode is a node of EXPLAIN (ANALYZE, FORMAT JSON).
type planNode struct {
	Relation string     `json:"Relation Name"`
	Index    string     `json:"Index Name"`
	Rows     int        `json:"Actual Rows"`
	Removed  int        `json:"Rows Removed by Filter"`
	Loops    int        `json:"Actual Loops"`
	Plans    []planNode `json:"Plans"`
}

func (n planNode) walk(f func(planNode)) {
	f(n)
	for _, c := range n.Plans {
		c.walk(f)
	}
}
