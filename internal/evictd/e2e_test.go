package evictd_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/evictd"
	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/pkg/client"
	"github.com/evict-dev/evict/pkg/guard"
)

// bundle is what a test gets from setup: a running evictd with its embedded
// NATS and a fresh database, three guards, and an API client.
type bundle struct {
	d      *evictd.Daemon
	api    *client.Client
	guards []*guard.Guard
	dbURL  string
}

const token = "test-token"

func setup(t *testing.T, nGuards int, opts ...func(*evictd.Config)) *bundle {
	return setupTB(t, nGuards, opts...)
}

func setupTB(t testing.TB, nGuards int, opts ...func(*evictd.Config)) *bundle {
	t.Helper()
	dbURL := testenv.Database(t)
	d, _ := startDaemon(t, dbURL, "", opts...)
	b := &bundle{d: d, api: client.New("http://"+d.HTTPAddr, token, nil), dbURL: dbURL}
	for i := 0; i < nGuards; i++ {
		b.guards = append(b.guards, testenv.Guard(t, d.NATSURL, guard.Config{}))
	}
	return b
}

// startDaemon starts evictd in-process on dbURL, with its embedded NATS when
// natsURL is empty. It stops when the test ends or when stop is called.
func startDaemon(t testing.TB, dbURL, natsURL string, opts ...func(*evictd.Config)) (d *evictd.Daemon, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := evictd.Config{
		DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", NATSURL: natsURL, DatabaseURL: dbURL, HTTPAddr: "127.0.0.1:0",
		AdminToken: token, SessionMaxAge: 24 * time.Hour, Replicas: 1, RelayBatch: 1000, Logger: testenv.Quiet,
		HeartbeatInterval: 50 * time.Millisecond, GuardLiveness: 500 * time.Millisecond, SeenChangeEvery: 200 * time.Millisecond,
		// Tests refuse many bad credentials on purpose from one address;
		// TestAuthFailuresPerAddress sets its own.
		AuthFailureBurst: 100_000,
	}
	for _, o := range opts {
		o(&cfg)
	}
	d, err := evictd.Start(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("start evictd: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := d.Wait(); err != nil {
				t.Errorf("evictd shutdown: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return d, stop
}

// waitSynced waits until every guard applied a heartbeat sent after now:
// by then every revocation committed before now is in every guard.
func (b *bundle) waitSynced(t *testing.T) {
	t.Helper()
	start := time.Now()
	for _, g := range b.guards {
		testenv.Eventually(t, "guard heartbeat", func() bool { return g.StateAge() < time.Since(start) })
	}
}

// waitPublished waits until the relay has published every outbox row.
func (b *bundle) waitPublished(t *testing.T) {
	t.Helper()
	pool := testenv.Pool(t, b.dbURL)
	testenv.Eventually(t, "outbox drained", func() bool {
		var n int
		return pool.QueryRow(context.Background(), "SELECT count(*) FROM outbox").Scan(&n) == nil && n == 0
	})
}

// settled returns the operation once the relay has settled what it
// published: it does so every 10 ms, so the status may say publishing a
// moment after the guards applied the events.
func (b *bundle) settled(t *testing.T, id string) client.Operation {
	t.Helper()
	var op client.Operation
	var err error
	testenv.Eventually(t, "operation settled", func() bool {
		op, err = b.api.Operation(context.Background(), id)
		return err != nil || op.Status != "publishing"
	})
	if err != nil {
		t.Fatal(err)
	}
	return op
}

// serviceJS is JetStream as evictd's own NATS user sees it.
func (b *bundle) serviceJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	return testenv.JetStream(t, b.d.ServiceNATSURL)
}

func (b *bundle) register(t *testing.T, tenant, user, session string) guard.Session {
	t.Helper()
	s, err := b.api.RegisterSession(context.Background(), tenant, client.NewSession{SessionID: session, UserID: user, Client: "web"})
	if err != nil {
		t.Fatalf("register %s/%s: %v", user, session, err)
	}
	return guard.Session{Tenant: tenant, User: user, ID: session, IssuedAt: s.IssuedAt}
}

func (b *bundle) revokedEverywhere(t *testing.T, s guard.Session) {
	t.Helper()
	for i, g := range b.guards {
		testenv.Eventually(t, fmt.Sprintf("guard %d to revoke %s/%s", i, s.User, s.ID), func() bool {
			return errors.Is(g.Check(s), guard.ErrSessionRevoked)
		})
	}
}

func (b *bundle) validEverywhere(t *testing.T, s guard.Session) {
	t.Helper()
	for i, g := range b.guards {
		if err := g.Check(s); err != nil {
			t.Errorf("guard %d: session %s/%s of %s: got %v, want valid", i, s.Tenant, s.ID, s.User, err)
		}
	}
}

func TestEveryCommandLogsOutOnEveryGuard(t *testing.T) {
	b := setup(t, 3)
	ctx := context.Background()
	for _, tenant := range []string{"acme", "other"} {
		if _, err := b.api.CreateTenant(ctx, tenant); err != nil {
			t.Fatal(err)
		}
	}
	type sessions map[string]guard.Session
	tests := []struct {
		name string
		// command runs the admin command against the fixture sessions.
		command func(t *testing.T, fx sessions) (client.Accepted, error)
		revoked []string // keys into the fixture: "user/session"
		kept    []string
		status  string // expected GET session status of the first revoked session
		cause   string
	}{{
		name: "remove from group",
		command: func(t *testing.T, fx sessions) (client.Accepted, error) {
			if _, err := b.api.AddMember(ctx, "acme", "site-1", "alice"); err != nil {
				t.Fatal(err)
			}
			return b.api.RemoveMember(ctx, "acme", "site-1", "alice", "left the site")
		},
		revoked: []string{"alice/a1", "alice/a2"},
		kept:    []string{"bob/b1", "other:alice/oa1"},
		cause:   events.CauseMemberRemoved,
	}, {
		name: "log out user",
		command: func(t *testing.T, fx sessions) (client.Accepted, error) {
			return b.api.LogoutUser(ctx, "acme", "alice", "")
		},
		revoked: []string{"alice/a1", "alice/a2"},
		kept:    []string{"bob/b1", "other:alice/oa1"},
		cause:   events.CauseLogout,
	}, {
		name: "log out one session",
		command: func(t *testing.T, fx sessions) (client.Accepted, error) {
			return b.api.LogoutSession(ctx, "acme", fx["alice/a1"].ID, "")
		},
		revoked: []string{"alice/a1"},
		kept:    []string{"alice/a2", "bob/b1"},
		cause:   events.CauseLogout,
	}, {
		name: "access changed",
		command: func(t *testing.T, fx sessions) (client.Accepted, error) {
			return b.api.AccessChanged(ctx, "acme", "bob", "role downgraded")
		},
		revoked: []string{"bob/b1"},
		kept:    []string{"alice/a1", "carol/c1"},
		cause:   events.CauseAccessChanged,
	}, {
		name: "log out selected users",
		command: func(t *testing.T, fx sessions) (client.Accepted, error) {
			return b.api.LogoutUsers(ctx, "acme", []string{"alice", "carol", "alice"}, "")
		},
		revoked: []string{"alice/a1", "alice/a2", "carol/c1"},
		kept:    []string{"bob/b1", "other:alice/oa1"},
		cause:   events.CauseLogout,
	}, {
		name: "log out tenant",
		command: func(t *testing.T, fx sessions) (client.Accepted, error) {
			return b.api.LogoutTenant(ctx, "acme", "incident")
		},
		revoked: []string{"alice/a1", "alice/a2", "bob/b1", "carol/c1"},
		kept:    []string{"other:alice/oa1", "other:dave/od1"},
		cause:   events.CauseTenantLogout,
	}, {
		name: "directory sync drops a member",
		command: func(t *testing.T, fx sessions) (client.Accepted, error) {
			if _, err := b.api.SetMembers(ctx, "acme", "site-2", []string{"alice", "bob"}, ""); err != nil {
				t.Fatal(err)
			}
			a, err := b.api.SetMembers(ctx, "acme", "site-2", []string{"bob", "carol"}, "nightly sync")
			if err == nil && (strings.Join(a.Added, ",") != "carol" || strings.Join(a.Removed, ",") != "alice") {
				t.Errorf("set members: added %v removed %v, want [carol] [alice]", a.Added, a.Removed)
			}
			return a, err
		},
		revoked: []string{"alice/a1", "alice/a2"},
		kept:    []string{"bob/b1", "carol/c1"},
		cause:   events.CauseMemberRemoved,
	}, {
		name: "session ended by its holder",
		command: func(t *testing.T, fx sessions) (client.Accepted, error) {
			return b.api.EndSession(ctx, "acme", fx["bob/b1"].ID)
		},
		revoked: []string{"bob/b1"},
		kept:    []string{"alice/a1"},
		cause:   events.CauseSessionEnded,
	}}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Fresh session ids per case: earlier cases revoked the old ones.
			fx := sessions{}
			for _, key := range []string{"alice/a1", "alice/a2", "bob/b1", "carol/c1", "other:alice/oa1", "other:dave/od1"} {
				tenant, rest := "acme", key
				if t, r, ok := strings.Cut(key, ":"); ok {
					tenant, rest = t, r
				}
				user, sid, _ := strings.Cut(rest, "/")
				fx[key] = b.register(t, tenant, user, fmt.Sprintf("%s-%d", sid, i))
			}
			for _, s := range fx {
				b.validEverywhere(t, s)
			}
			acc, err := tt.command(t, fx)
			if err != nil {
				t.Fatalf("command: %v", err)
			}
			for _, k := range tt.revoked {
				b.revokedEverywhere(t, fx[k])
			}
			b.waitSynced(t)
			for _, k := range tt.kept {
				b.validEverywhere(t, fx[k])
			}
			first := fx[tt.revoked[0]]
			got, err := b.api.GetSession(ctx, "acme", first.ID)
			if err != nil {
				t.Fatal(err)
			}
			wantStatus := "revoked"
			if tt.cause == events.CauseSessionEnded {
				wantStatus = "ended"
			}
			if got.Status != wantStatus || got.RevokeCause != tt.cause || got.RevokeOperation != acc.OperationID {
				t.Errorf("session status = %s cause %q op %s; want %s %q %s", got.Status, got.RevokeCause, got.RevokeOperation,
					wantStatus, tt.cause, acc.OperationID)
			}
			op := b.settled(t, acc.OperationID)
			if op.Status != "published" || op.Events.Pending != 0 || op.Events.Total == 0 || op.Tenant != "acme" || op.Actor != "bootstrap" {
				t.Errorf("operation = %+v; want published, all events out", op)
			}
			// A login after the logout is a new session and must work.
			fresh := b.register(t, "acme", first.User, fmt.Sprintf("fresh-%d", i))
			b.waitSynced(t)
			b.validEverywhere(t, fresh)
		})
	}
}

func TestBulkLogoutOfTenThousandUsers(t *testing.T) {
	b := setup(t, 3)
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "bulk"); err != nil {
		t.Fatal(err)
	}
	issued := time.Now().Add(-time.Minute)
	users := make([]string, 10_000)
	for i := range users {
		users[i] = fmt.Sprintf("user-%05d", i)
	}
	survivor := guard.Session{Tenant: "bulk", User: "not-in-the-list", ID: "keep", IssuedAt: issued}
	acc, err := b.api.LogoutUsers(ctx, "bulk", users, "bulk test")
	if err != nil {
		t.Fatal(err)
	}
	for gi, g := range b.guards {
		testenv.Eventually(t, fmt.Sprintf("guard %d to revoke 10,000 users", gi), func() bool {
			for _, u := range users {
				if !errors.Is(g.Check(guard.Session{Tenant: "bulk", User: u, ID: "s-" + u, IssuedAt: issued}), guard.ErrSessionRevoked) {
					return false
				}
			}
			return true
		})
	}
	b.waitSynced(t)
	b.validEverywhere(t, survivor)
	op := b.settled(t, acc.OperationID)
	// One users.revoked event per 1,000 users.
	if batches := len(users) / events.MaxUsersPerEvent; op.Request.UserCount != len(users) || op.Events.Total != batches || op.Status != "published" {
		t.Errorf("operation: %d users, %d events, %s; want %d, %d, published", op.Request.UserCount, op.Events.Total, op.Status, len(users), batches)
	}
}

func TestIdempotencyKey(t *testing.T) {
	b := setup(t, 0)
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	key := client.WithIdempotencyKey("retry-1")
	first, err := b.api.LogoutUser(ctx, "acme", "alice", "x", key)
	if err != nil {
		t.Fatal(err)
	}
	// Retries, sequential and concurrent, return the first answer.
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			again, err := b.api.LogoutUser(ctx, "acme", "alice", "x", key)
			if err != nil || again.OperationID != first.OperationID {
				t.Errorf("retry: %v, operation %s, want %s", err, again.OperationID, first.OperationID)
			}
		}()
	}
	wg.Wait()
	_, err = b.api.LogoutUser(ctx, "acme", "bob", "x", key)
	if !client.IsCode(err, "idempotency_key_reused") {
		t.Errorf("same key, other request: got %v, want idempotency_key_reused", err)
	}
	// A command without a key has no request hash to compare: none is
	// computed or stored.
	if _, err := b.api.LogoutUser(ctx, "acme", "carol", "x"); err != nil {
		t.Fatal(err)
	}
	pool := testenv.Pool(t, b.dbURL)
	var keyed, hashed int
	if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE idempotency_key IS NOT NULL),
		count(*) FILTER (WHERE request_hash IS NOT NULL) FROM operations`).Scan(&keyed, &hashed); err != nil {
		t.Fatal(err)
	}
	if keyed != 1 || hashed != 1 {
		t.Errorf("%d operations recorded with a key and %d with a request hash, want 1 and 1", keyed, hashed)
	}
}

// TestConcurrentFirstUseOfIdempotencyKey: eight first attempts with one
// Idempotency-Key race, in five rounds. The losers fail on the operation's
// unique key in the last round trip of the pipelined command, after the
// watermark, the session and the targets were written; each must roll back
// entirely and replay the winner's answer.
func TestConcurrentFirstUseOfIdempotencyKey(t *testing.T) {
	b := setup(t, 0)
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	const rounds = 5
	for r := range rounds {
		user := fmt.Sprintf("user-%d", r)
		b.registerOn(t, "acme", user, "web-"+user, "web", "", nil)
		key := client.WithIdempotencyKey(fmt.Sprintf("race-%d", r))
		ids := make([]string, 8)
		var wg sync.WaitGroup
		for i := range ids {
			wg.Go(func() {
				op, err := b.api.LogoutUser(ctx, "acme", user, "x", key)
				if err != nil {
					t.Errorf("round %d, attempt %d: %v", r, i, err)
				}
				ids[i] = op.OperationID
			})
		}
		wg.Wait()
		for i, id := range ids {
			if id != ids[0] {
				t.Errorf("round %d: attempt %d got operation %s, attempt 0 got %s", r, i, id, ids[0])
			}
		}
	}
	pool := testenv.Pool(t, b.dbURL)
	for _, c := range []struct {
		what string
		sql  string
		want int
	}{
		{"operations", "SELECT count(*) FROM operations", rounds},
		{"audit rows of logouts", "SELECT count(*) FROM audit_log WHERE operation_id IS NOT NULL", rounds},
		{"targets", "SELECT count(*) FROM operation_targets", rounds},
		{"targets of no operation", "SELECT count(*) FROM operation_targets WHERE operation_id NOT IN (SELECT id FROM operations)", 0},
		{"watermarks of another operation", "SELECT count(*) FROM user_watermarks WHERE operation_id NOT IN (SELECT id FROM operations)", 0},
		{"sessions revoked by another operation", "SELECT count(*) FROM sessions WHERE revoke_operation NOT IN (SELECT id FROM operations)", 0},
		{"feed rows of revocations", "SELECT count(*) FROM session_changes WHERE kind = 'revoked'", rounds},
	} {
		var n int
		if err := pool.QueryRow(ctx, c.sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != c.want {
			t.Errorf("%s: %d, want %d", c.what, n, c.want)
		}
	}
}

func TestMetricsAndProbes(t *testing.T) {
	b := setup(t, 0)
	for path, want := range map[string]string{
		"/healthz":         `"ok"`,
		"/readyz":          `"ready"`,
		"/v1/openapi.json": `"openapi"`,
		"/metrics":         "evict_outbox_backlog",
	} {
		resp, err := http.Get("http://" + b.d.HTTPAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, body lacks %s", path, resp.StatusCode, want)
		}
	}
}
