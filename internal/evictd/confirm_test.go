package evictd_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/evictd"
	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/pkg/client"
	"github.com/evict-dev/evict/pkg/guard"
)

// runGuard starts a guard that the test can stop, to play a holder that goes down.
func runGuard(t *testing.T, url, instance string) (g *guard.Guard, stop func()) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	g, err = guard.New(guard.Config{Conn: nc, Instance: instance, ReportInterval: 100 * time.Millisecond,
		SeenInterval: 100 * time.Millisecond, Logger: testenv.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
			nc.Close()
		}
	}
	t.Cleanup(stop)
	<-g.Ready()
	return g, stop
}

func (b *bundle) registerOn(t *testing.T, tenant, user, session, client_, holder string, expires *time.Time) guard.Session {
	t.Helper()
	s, err := b.api.RegisterSession(context.Background(), tenant, client.NewSession{
		SessionID: session, UserID: user, Client: client_, Holder: holder, ExpiresAt: expires})
	if err != nil {
		t.Fatal(err)
	}
	return guard.Session{Tenant: tenant, User: user, ID: session, IssuedAt: s.IssuedAt}
}

func targetStates(op client.Operation) map[string]string {
	m := map[string]string{}
	for _, t := range op.Targets {
		m[t.SessionID] = t.Status + "@" + t.Holder
	}
	return m
}

// TestLogoutConfirmedOnEveryHolder: a user with a web, a mobile and a
// workflow session, each held by its own guard instance, is logged out; the
// operation completes with every target enforced by its holder, and the
// time to completion is recorded.
func TestLogoutConfirmedOnEveryHolder(t *testing.T) {
	b := setup(t, 0)
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	holders := map[string]string{"web": "web-1", "mobile": "mobile-1", "workflow": "workflow-1"}
	for _, h := range holders {
		runGuard(t, b.d.NATSURL, h)
	}
	for c, h := range holders {
		b.registerOn(t, "acme", "alice", "alice-"+c, c, h, nil)
	}
	acc, err := b.api.LogoutUser(ctx, "acme", "alice", "offboarding")
	if err != nil {
		t.Fatal(err)
	}
	op, err := b.api.WaitOperation(ctx, acc.OperationID, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"alice-web": "enforced@web-1", "alice-mobile": "enforced@mobile-1", "alice-workflow": "enforced@workflow-1"}
	if got := targetStates(op); op.Summary != "completed" || len(got) != 3 || got["alice-web"] != want["alice-web"] ||
		got["alice-mobile"] != want["alice-mobile"] || got["alice-workflow"] != want["alice-workflow"] {
		t.Fatalf("summary %s, targets %v; want completed, %v", op.Summary, got, want)
	}
	if len(op.Guards) != 3 {
		t.Errorf("%d live guards listed, want 3", len(op.Guards))
	}
	testenv.Eventually(t, "completion time recorded", func() bool {
		op, err = b.api.Operation(ctx, acc.OperationID)
		return err == nil && op.CompletedAt != nil
	})
	if op.CompletionSeconds == nil || *op.CompletionSeconds <= 0 || *op.CompletionSeconds > 10 {
		t.Errorf("completion_seconds = %v", op.CompletionSeconds)
	}
}

// TestHolderDownMakesOperationPartial: while the holder of one target is
// down, the operation is partial, never completed; it completes when the
// holder comes back and applies the revocation, or when the session expires.
func TestHolderDownMakesOperationPartial(t *testing.T) {
	tests := []struct {
		name    string
		expires bool // the down holder's session expires instead of the holder returning
	}{{"holder comes back", false}, {"session expires", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := setup(t, 0)
			ctx := context.Background()
			if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
				t.Fatal(err)
			}
			runGuard(t, b.d.NATSURL, "web-1")
			_, stopMobile := runGuard(t, b.d.NATSURL, "mobile-1")
			b.registerOn(t, "acme", "bob", "bob-web", "web", "web-1", nil)
			var expires *time.Time
			if tt.expires {
				e := time.Now().Add(3 * time.Second)
				expires = &e
			}
			b.registerOn(t, "acme", "bob", "bob-mobile", "mobile", "mobile-1", expires)
			stopMobile()
			time.Sleep(600 * time.Millisecond) // past the 500 ms liveness window of this test's evictd

			acc, err := b.api.LogoutUser(ctx, "acme", "bob", "")
			if err != nil {
				t.Fatal(err)
			}
			var op client.Operation
			testenv.Eventually(t, "partial", func() bool {
				op, err = b.api.Operation(ctx, acc.OperationID)
				if err == nil && op.Summary == "completed" {
					t.Fatalf("completed while the mobile holder is down: %v", targetStates(op))
				}
				return err == nil && op.Summary == "partial"
			})
			got := targetStates(op)
			if got["bob-web"] != "enforced@web-1" || got["bob-mobile"] != "pending@mobile-1" {
				t.Fatalf("targets %v", got)
			}
			for _, tg := range op.Targets {
				if tg.SessionID == "bob-mobile" && (tg.HolderLive || tg.Detail != "holder_down") {
					t.Errorf("mobile target: live=%v detail=%q, want holder_down", tg.HolderLive, tg.Detail)
				}
			}
			wantMobile := "enforced@mobile-1"
			if tt.expires {
				wantMobile = "terminated@mobile-1"
			} else {
				g, _ := runGuard(t, b.d.NATSURL, "mobile-1")
				if err := g.Check(guard.Session{Tenant: "acme", User: "bob", ID: "bob-mobile", IssuedAt: time.Now().Add(-time.Minute)}); !errors.Is(err, guard.ErrSessionRevoked) {
					t.Fatalf("returning holder does not refuse the session: %v", err)
				}
			}
			op, err = b.api.WaitOperation(ctx, acc.OperationID, 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if got := targetStates(op); op.Summary != "completed" || got["bob-mobile"] != wantMobile {
				t.Fatalf("summary %s, targets %v; want completed with bob-mobile %s", op.Summary, got, wantMobile)
			}
		})
	}
}

// TestDeferredSessionFinishesInFlightWork: a session in a phone call is
// revoked; its new requests are refused at once, the call's live connection
// stays up until the call ends, and the target goes deferred → terminated.
func TestDeferredSessionFinishesInFlightWork(t *testing.T) {
	b := setup(t, 0)
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	g, _ := runGuard(t, b.d.NATSURL, "callcenter-1")
	s := b.registerOn(t, "acme", "carol", "carol-desk", "web", "callcenter-1", nil)
	if err := g.Check(s); err != nil {
		t.Fatal(err)
	}
	hangUp := g.Busy(s)              // the call is in flight
	media, release := g.Hold(ctx, s) // the call's media connection
	defer release()

	acc, err := b.api.LogoutUser(ctx, "acme", "carol", "")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "new requests refused", func() bool { return errors.Is(g.Check(s), guard.ErrSessionRevoked) })
	var op client.Operation
	testenv.Eventually(t, "deferred", func() bool {
		op, err = b.api.Operation(ctx, acc.OperationID)
		return err == nil && targetStates(op)["carol-desk"] == "deferred@callcenter-1"
	})
	if op.Summary != "pending" {
		t.Errorf("summary %s while the call goes on, want pending", op.Summary)
	}
	if media.Err() != nil {
		t.Fatal("the call's connection was cut while the call was in flight")
	}
	hangUp()
	select {
	case <-media.Done():
		if !errors.Is(context.Cause(media), guard.ErrSessionRevoked) {
			t.Errorf("connection ended with %v", context.Cause(media))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection stayed open after the call ended")
	}
	op, err = b.api.WaitOperation(ctx, acc.OperationID, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := targetStates(op); op.Summary != "completed" || got["carol-desk"] != "terminated@callcenter-1" {
		t.Fatalf("summary %s, targets %v; want completed, terminated", op.Summary, got)
	}
	sess, err := b.api.GetSession(ctx, "acme", "carol-desk")
	if err != nil {
		t.Fatal(err)
	}
	if sess.Status != "revoked" {
		t.Errorf("session status %s", sess.Status)
	}
}

// TestGuardTracksSessionsOverNATS: a guard registers and ends sessions with
// its NATS connection alone; evict records it as their holder.
func TestGuardTracksSessionsOverNATS(t *testing.T) {
	b := setup(t, 0)
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	g, _ := runGuard(t, b.d.NATSURL, "web-7")
	s, err := g.Track(ctx, guard.NewSession{Tenant: "acme", User: "ivy", ID: "ivy-1", Client: "web", DeviceID: "laptop-9"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.api.GetSession(ctx, "acme", "ivy-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Holder != "web-7" || got.DeviceID != "laptop-9" || !got.IssuedAt.Equal(s.IssuedAt) || got.Status != "active" {
		t.Errorf("registered session: %+v; want holder web-7, issued_at %v", got, s.IssuedAt)
	}
	if err := g.Check(s); err != nil {
		t.Fatal(err)
	}
	if err := g.End(ctx, "acme", "ivy-1"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "ended session refused", func() bool { return errors.Is(g.Check(s), guard.ErrSessionRevoked) })

	var rpcErr *guard.RPCError
	for name, ns := range map[string]guard.NewSession{
		"bad id":         {Tenant: "acme", User: "ivy", ID: "a.b", Client: "web"},
		"unknown tenant": {Tenant: "nope", User: "ivy", ID: "ivy-2", Client: "web"},
	} {
		if _, err := g.Track(ctx, ns); !errors.As(err, &rpcErr) || rpcErr.Status/100 != 4 {
			t.Errorf("%s: %v, want a 4xx refusal", name, err)
		}
	}
	// A tenant that cannot be a subject token is refused before anything is sent.
	if _, err := g.Track(ctx, guard.NewSession{Tenant: "a>b", User: "ivy", ID: "ivy-2", Client: "web"}); !errors.Is(err, events.ErrInvalidID) {
		t.Errorf("bad tenant: %v, want ErrInvalidID", err)
	}
	if err := g.End(ctx, "acme", "never-registered"); !errors.As(err, &rpcErr) || rpcErr.Code != "session_not_found" {
		t.Errorf("ending an unknown session: %v", err)
	}
}

// TestLargeLogoutRecordsTargetsAfterCommit: a logout of 2,500 users, more
// than a command records inline, commits its watermarks and its three
// users.revoked events first and records its 2,500 targets after the
// commit. The holder enforces every user, and the operation completes with
// every target recorded and enforced by its holder; until the targets are
// recorded it is never completed.
func TestLargeLogoutRecordsTargetsAfterCommit(t *testing.T) {
	b := setup(t, 0)
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	g, _ := runGuard(t, b.d.NATSURL, "web-1")
	<-g.Ready()
	const n = 2500
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("user-%05d", i)
	}
	// The sessions as registration leaves them, held by web-1.
	pool := testenv.Pool(t, b.dbURL)
	issued := time.Now().Add(-time.Hour)
	if _, err := pool.Exec(ctx, `INSERT INTO sessions (tenant_id, session_id, user_id, client, issued_at, holder)
		SELECT 'acme', 's-' || u, u, 'web', $2, 'web-1' FROM unnest($1::text[]) u`, users, issued); err != nil {
		t.Fatal(err)
	}
	acc, err := b.api.LogoutUsers(ctx, "acme", users, "site closed")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the holder to refuse every user", func() bool {
		for _, u := range users {
			if !errors.Is(g.Check(guard.Session{Tenant: "acme", User: u, ID: "s-" + u, IssuedAt: issued}), guard.ErrSessionRevoked) {
				return false
			}
		}
		return true
	})
	var op client.Operation
	testenv.Eventually(t, "the operation to complete", func() bool {
		op, err = b.api.Operation(ctx, acc.OperationID)
		if err != nil {
			t.Fatal(err)
		}
		if op.Summary == "completed" && (op.TargetsPending || op.TotalTargets != n) {
			t.Fatalf("completed with targets pending %v, %d targets of %d", op.TargetsPending, op.TotalTargets, n)
		}
		return op.Summary == "completed"
	})
	if op.Events.Total != 3 || op.Counts["enforced"] != n || len(op.Targets) != 500 || !op.TargetsTruncated {
		t.Errorf("events %d, counts %v, %d targets listed (truncated %v); want 3, %d enforced, 500, true",
			op.Events.Total, op.Counts, len(op.Targets), op.TargetsTruncated, n)
	}
	var revoked, feed, pending int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM sessions WHERE revoke_operation = $1 AND revoke_cause = 'logout'),
			(SELECT count(*) FROM session_changes WHERE kind = 'revoked'), (SELECT count(*) FROM pending_targets)`,
		acc.OperationID).Scan(&revoked, &feed, &pending); err != nil {
		t.Fatal(err)
	}
	if revoked != n || feed != n || pending != 0 {
		t.Errorf("%d sessions revoked, %d feed entries, %d pending rows; want %d, %d, 0", revoked, feed, pending, n, n)
	}
}

// TestStoppedGuardStopsCounting: a guard that shuts down says so in its
// last report, and evict stops counting it as live at once. With a
// liveness window of a minute, a logout right after one of two guards
// stopped completes within seconds; had the stopped guard still counted,
// the operation would wait for it for the whole minute.
func TestStoppedGuardStopsCounting(t *testing.T) {
	b := setup(t, 0, func(c *evictd.Config) { c.GuardLiveness = time.Minute })
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	runGuard(t, b.d.NATSURL, "web-1")
	_, stopWeb2 := runGuard(t, b.d.NATSURL, "web-2")
	b.registerOn(t, "acme", "ivy", "ivy-web", "web", "web-1", nil)
	// Both guards have reported once (a ready guard reports at once, and
	// the registry stores reports every 20 ms): both count as live.
	pool := testenv.Pool(t, b.dbURL)
	testenv.Eventually(t, "both guards' reports stored", func() bool {
		var n int
		return pool.QueryRow(ctx, "SELECT count(*) FROM guard_instances WHERE instance IN ('web-1', 'web-2')").Scan(&n) == nil && n == 2
	})
	acc, err := b.api.LogoutUser(ctx, "acme", "nobody", "")
	if err != nil {
		t.Fatal(err)
	}
	op, err := b.api.WaitOperation(ctx, acc.OperationID, 10*time.Second)
	if err != nil || op.Summary != "completed" || len(op.Guards) != 2 {
		t.Fatalf("first logout: %s with %d live guards (%v); want completed with 2", op.Summary, len(op.Guards), err)
	}
	stopWeb2()
	acc, err = b.api.LogoutUser(ctx, "acme", "ivy", "")
	if err != nil {
		t.Fatal(err)
	}
	op, err = b.api.WaitOperation(ctx, acc.OperationID, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if op.Summary != "completed" || len(op.Guards) != 1 || op.Guards[0].Instance != "web-1" || targetStates(op)["ivy-web"] != "enforced@web-1" {
		t.Fatalf("after web-2 stopped: %s, guards %+v, targets %v; want completed, web-1 alone, ivy-web enforced@web-1",
			op.Summary, op.Guards, targetStates(op))
	}
}
