package guard_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/bus"
	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/pkg/guard"
)

// publisher plays evict's relay: it writes state events to EVICT_STATE.
type publisher struct {
	t   testing.TB
	js  jetstream.JetStream
	url string
	n   int
}

func newPublisher(t testing.TB) *publisher {
	t.Helper()
	ns := testenv.NATS(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192))
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.EnsureStreams(context.Background(), js, bus.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	return &publisher{t: t, js: js, url: ns.ClientURL()}
}

func (p *publisher) publish(subject string, ev any) {
	p.t.Helper()
	b, err := json.Marshal(ev)
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.js.PublishAsync(subject, b); err != nil {
		p.t.Fatal(err)
	}
	p.n++
	if p.n%4096 == 0 {
		p.flush()
	}
}

func (p *publisher) flush() {
	p.t.Helper()
	select {
	case <-p.js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		p.t.Fatal("publish acks not received")
	}
}

func (p *publisher) user(tenant, user string, nb time.Time) {
	subj, err := events.UserStateSubject(tenant, user)
	if err != nil {
		p.t.Fatal(err)
	}
	p.publish(subj, events.New(fmt.Sprint("e", p.n), events.TypeUserRevoked, tenant, "users/"+user, nb,
		events.UserRevoked{Tenant: tenant, User: user, NotBefore: nb, OperationID: "op", Cause: events.CauseLogout}))
}

func (p *publisher) tenant(tenant string, nb time.Time) {
	subj, _ := events.TenantStateSubject(tenant)
	p.publish(subj, events.New(fmt.Sprint("e", p.n), events.TypeTenantRevoked, tenant, "tenant", nb,
		events.TenantRevoked{Tenant: tenant, NotBefore: nb, OperationID: "op", Cause: events.CauseTenantLogout}))
}

func (p *publisher) session(tenant, session string, at time.Time) {
	subj, _ := events.SessionStateSubject(tenant, session)
	p.publish(subj, events.New(fmt.Sprint("e", p.n), events.TypeSessionRevoked, tenant, "sessions/"+session, at,
		events.SessionRevoked{Tenant: tenant, Session: session, RevokedAt: at, OperationID: "op", Cause: events.CauseLogout}))
}

// users publishes a users.revoked batch named by id.
func (p *publisher) users(tenant, id string, users []string, nb time.Time) {
	subj, err := events.UsersStateSubject(tenant, id)
	if err != nil {
		p.t.Fatal(err)
	}
	p.publish(subj, events.New(id, events.TypeUsersRevoked, tenant, "users", nb,
		events.UsersRevoked{Tenant: tenant, Users: users, NotBefore: nb, OperationID: "op", Cause: events.CauseLogout}))
}

func (p *publisher) heartbeat() {
	ev := events.New(fmt.Sprint("hb", p.n), events.TypeHeartbeat, "", "", time.Now(), events.Heartbeat{Instance: "test"})
	p.publish(events.HeartbeatSubject, ev)
	p.flush()
}

func TestCheck(t *testing.T) {
	p := newPublisher(t)
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 123456000, time.UTC) // microsecond precision, like PostgreSQL
	p.user("acme", "alice", t0)
	p.tenant("wide", t0)
	p.session("acme", "stolen", t0)
	// Data naming another tenant than its subject: a publisher allowed on
	// "attacker" subjects must not revoke a "victim" session.
	p.publish("evict.state.attacker.user.alice", events.New("forged", events.TypeUserRevoked, "victim", "users/alice", t0,
		events.UserRevoked{Tenant: "victim", User: "alice", NotBefore: t0, OperationID: "op", Cause: events.CauseLogout}))
	// A batch of users; dave also has a later watermark of his own, which
	// the older batch must not lower, whichever comes first.
	p.user("acme", "dave", t0.Add(time.Hour))
	p.users("acme", "batch-1", []string{"erin", "dave", "frank"}, t0)
	// A batch on a subject that does not name it, or naming another tenant.
	p.publish("evict.state.attacker.users.batch-2", events.New("batch-2", events.TypeUsersRevoked, "victim", "users", t0,
		events.UsersRevoked{Tenant: "victim", Users: []string{"grace"}, NotBefore: t0, OperationID: "op", Cause: events.CauseLogout}))
	p.publish("evict.state.acme.users.batch-3", events.New("batch-4", events.TypeUsersRevoked, "acme", "users", t0,
		events.UsersRevoked{Tenant: "acme", Users: []string{"heidi"}, NotBefore: t0, OperationID: "op", Cause: events.CauseLogout}))
	p.heartbeat()
	g := testenv.Guard(t, p.url, guard.Config{})

	tests := []struct {
		name string
		s    guard.Session
		want error
	}{
		{"issued before the user's logout", guard.Session{"acme", "alice", "s1", t0.Add(-time.Hour)}, guard.ErrSessionRevoked},
		{"issued at the logout's microsecond", guard.Session{"acme", "alice", "s1", t0}, guard.ErrSessionRevoked},
		{"issued later in the same microsecond", guard.Session{"acme", "alice", "s1", t0.Add(999 * time.Nanosecond)}, guard.ErrSessionRevoked},
		{"issued the next microsecond", guard.Session{"acme", "alice", "s1", t0.Add(time.Microsecond)}, nil},
		{"another user of the tenant", guard.Session{"acme", "bob", "s2", t0.Add(-time.Hour)}, nil},
		{"same user in another tenant", guard.Session{"other", "alice", "s1", t0.Add(-time.Hour)}, nil},
		{"tenant-wide logout, old session", guard.Session{"wide", "anyone", "s3", t0.Add(-time.Second)}, guard.ErrSessionRevoked},
		{"tenant-wide logout, new session", guard.Session{"wide", "anyone", "s3", t0.Add(time.Second)}, nil},
		{"revoked session, whenever issued", guard.Session{"acme", "carol", "stolen", t0.Add(time.Hour)}, guard.ErrSessionRevoked},
		{"revoked session id in another tenant", guard.Session{"other", "carol", "stolen", t0.Add(-time.Hour)}, nil},
		{"user id equal to a session id", guard.Session{"acme", "stolen", "fine", t0.Add(-time.Hour)}, nil},
		{"forged data on another tenant's subject", guard.Session{"victim", "alice", "v1", t0.Add(-time.Hour)}, nil},
		{"user of a batch, issued before it", guard.Session{"acme", "erin", "s4", t0.Add(-time.Hour)}, guard.ErrSessionRevoked},
		{"last user of a batch, issued at it", guard.Session{"acme", "frank", "s5", t0}, guard.ErrSessionRevoked},
		{"user of a batch, issued after it", guard.Session{"acme", "erin", "s4", t0.Add(time.Microsecond)}, nil},
		{"own watermark later than the batch", guard.Session{"acme", "dave", "s6", t0.Add(time.Minute)}, guard.ErrSessionRevoked},
		{"batch naming another tenant than its subject", guard.Session{"victim", "grace", "v2", t0.Add(-time.Hour)}, nil},
		{"batch on another batch's subject", guard.Session{"acme", "heidi", "s7", t0.Add(-time.Hour)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := g.Check(tt.s); !errors.Is(got, tt.want) || (tt.want == nil && got != nil) {
				t.Errorf("Check(%+v) = %v, want %v", tt.s, got, tt.want)
			}
		})
	}
	// alice, wide, stolen, and from the batch erin, dave and frank.
	if g.Entries() != 6 {
		t.Errorf("Entries() = %d, want 6", g.Entries())
	}
	if err := g.Healthy(); err != nil {
		t.Errorf("Healthy() = %v after a fresh heartbeat", err)
	}
}

func TestWatermarksOnlyRise(t *testing.T) {
	p := newPublisher(t)
	t0 := time.Now().Truncate(time.Microsecond)
	p.heartbeat()
	g := testenv.Guard(t, p.url, guard.Config{})
	s := guard.Session{"acme", "alice", "s", t0.Add(-time.Minute)}
	p.user("acme", "alice", t0)
	p.flush()
	testenv.Eventually(t, "revocation", func() bool { return g.Check(s) != nil })
	// An older watermark for the same user (evict's relay never publishes
	// one, but a guard must not depend on that for the state it holds).
	p.user("acme", "alice", t0.Add(-time.Hour))
	p.heartbeat()
	testenv.Eventually(t, "both applied", func() bool { return g.AppliedSequence() >= 4 })
	if err := g.Check(s); !errors.Is(err, guard.ErrSessionRevoked) {
		t.Errorf("a late, older watermark lowered the newer one: %v", err)
	}
}

func TestColdStartWithOneHundredThousandRevocations(t *testing.T) {
	p := newPublisher(t)
	nb := time.Now().Truncate(time.Microsecond)
	const n = 100_000
	for i := 0; i < n; i++ {
		p.user("big", fmt.Sprintf("u%06d", i), nb)
	}
	p.heartbeat()
	g := testenv.Guard(t, p.url, guard.Config{Tenants: []string{"big"}})
	// Ready means loaded: no waiting after it.
	if got := g.Entries(); got != n {
		t.Fatalf("ready with %d entries, want %d", got, n)
	}
	for i := 0; i < n; i++ {
		s := guard.Session{"big", fmt.Sprintf("u%06d", i), "s", nb.Add(-time.Second)}
		if !errors.Is(g.Check(s), guard.ErrSessionRevoked) {
			t.Fatalf("user %d not revoked after ready", i)
		}
	}
}

func TestCatchUpAfterDisconnection(t *testing.T) {
	p := newPublisher(t)
	p.heartbeat()
	proxy := testenv.NewProxy(t, strings.TrimPrefix(p.url, "nats://"))
	g := testenv.Guard(t, "nats://"+proxy.Addr(), guard.Config{MaxStaleness: 300 * time.Millisecond, WhenStale: guard.FailClosed})

	proxy.Cut()
	nb := time.Now().Truncate(time.Microsecond)
	const n = 10_000
	for i := 0; i < n; i++ {
		p.user("acme", fmt.Sprintf("u%05d", i), nb)
	}
	p.heartbeat()
	// Cut off, the guard cannot vouch for its state: fail closed refuses.
	testenv.Eventually(t, "stale state while disconnected", func() bool {
		return errors.Is(g.Check(guard.Session{"acme", "someone", "s", nb}), guard.ErrStateStale)
	})
	proxy.Restore()
	// The relay beats every second; here the test beats every 50 ms, as
	// long as it runs: with MaxStaleness 300 ms, a loaded machine could
	// otherwise see the state go stale again during the checks below.
	var beating sync.WaitGroup
	stop := make(chan struct{})
	beating.Go(func() {
		for i := 0; ; i++ {
			// Not p.heartbeat: it may call t.Fatal, which only the test's
			// goroutine may.
			b, _ := json.Marshal(events.New(fmt.Sprint("beat", i), events.TypeHeartbeat, "", "", time.Now(), events.Heartbeat{Instance: "test"}))
			if _, err := p.js.Publish(context.Background(), events.HeartbeatSubject, b); err != nil {
				t.Errorf("heartbeat: %v", err)
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	defer beating.Wait()
	defer close(stop)
	testenv.Eventually(t, "catch-up to a fresh state", func() bool { return g.Healthy() == nil })
	if g.Entries() != n {
		t.Fatalf("fresh with %d entries, want %d", g.Entries(), n)
	}
	for i := 0; i < n; i++ {
		s := guard.Session{"acme", fmt.Sprintf("u%05d", i), "s", nb.Add(-time.Second)}
		if !errors.Is(g.Check(s), guard.ErrSessionRevoked) {
			t.Fatalf("user %d not revoked after catch-up", i)
		}
	}
}

func TestStalePolicy(t *testing.T) {
	p := newPublisher(t)
	nb := time.Now().Truncate(time.Microsecond)
	p.user("acme", "alice", nb)
	p.flush() // no heartbeat: nothing vouches for the state
	tests := []struct {
		policy    guard.Policy
		valid     error
		revoked   error
		healthErr error
		counted   bool // the checks count in evict_guard_stale_checks_total
	}{
		{guard.FailOpen, nil, guard.ErrSessionRevoked, guard.ErrStateStale, true},
		{guard.FailClosed, guard.ErrStateStale, guard.ErrStateStale, guard.ErrStateStale, false},
	}
	for _, tt := range tests {
		t.Run(tt.policy.String(), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			g := testenv.Guard(t, p.url, guard.Config{WhenStale: tt.policy, Registerer: reg})
			testenv.Eventually(t, "stale flag", func() bool { return g.Healthy() != nil })
			if got := g.Check(guard.Session{"acme", "bob", "s", nb}); !errors.Is(got, tt.valid) || (tt.valid == nil && got != nil) {
				t.Errorf("valid session: %v, want %v", got, tt.valid)
			}
			if got := g.Check(guard.Session{"acme", "alice", "s", nb}); !errors.Is(got, tt.revoked) {
				t.Errorf("revoked session: %v, want %v", got, tt.revoked)
			}
			if got := g.Healthy(); !errors.Is(got, tt.healthErr) {
				t.Errorf("Healthy() = %v, want %v", got, tt.healthErr)
			}
			// Checks from many goroutines at once are all counted.
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					for range 1000 {
						_ = g.Check(guard.Session{"acme", "bob", "s", nb})
					}
				})
			}
			wg.Wait()
			want := 0.0
			if tt.counted {
				want = 2 + 8*1000
			}
			if got := testenv.Metric(t, reg, "evict_guard_stale_checks_total"); got != want {
				t.Errorf("evict_guard_stale_checks_total = %v, want %v", got, want)
			}
		})
	}
}

func TestMiddleware(t *testing.T) {
	p := newPublisher(t)
	nb := time.Now().Truncate(time.Microsecond)
	p.user("acme", "alice", nb)
	p.heartbeat()
	g := testenv.Guard(t, p.url, guard.Config{})
	sessions := map[string]guard.Session{
		"alice": {"acme", "alice", "a", nb.Add(-time.Minute)},
		"bob":   {"acme", "bob", "b", nb.Add(-time.Minute)},
	}
	h := g.Middleware(func(r *http.Request) (guard.Session, bool) {
		s, ok := sessions[r.Header.Get("X-User")]
		return s, ok
	})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := guard.SessionFrom(r.Context())
		fmt.Fprint(w, "hello "+s.User)
	}))
	tests := []struct {
		user       string
		wantStatus int
		wantBody   string
	}{
		{"alice", http.StatusUnauthorized, `"error":"session_revoked"`},
		{"bob", http.StatusOK, "hello bob"},
		{"", http.StatusOK, "hello "},
	}
	for _, tt := range tests {
		t.Run("user="+tt.user, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.Header.Set("X-User", tt.user)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus || !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("got %d %q, want %d containing %q", rec.Code, rec.Body.String(), tt.wantStatus, tt.wantBody)
			}
			if tt.wantStatus == http.StatusUnauthorized && rec.Header().Get("Content-Type") != "application/json" {
				t.Errorf("refusal content type %q", rec.Header().Get("Content-Type"))
			}
		})
	}
}

func TestHoldEndsLiveConnections(t *testing.T) {
	p := newPublisher(t)
	p.heartbeat()
	g := testenv.Guard(t, p.url, guard.Config{})
	issued := time.Now().Add(-time.Minute)
	alice, release := g.Hold(context.Background(), guard.Session{"acme", "alice", "a1", issued})
	defer release()
	bob, releaseBob := g.Hold(context.Background(), guard.Session{"acme", "bob", "b1", issued})
	defer releaseBob()
	sess, releaseSess := g.Hold(context.Background(), guard.Session{"acme", "carol", "c1", issued})
	defer releaseSess()

	p.user("acme", "alice", time.Now())
	p.session("acme", "c1", time.Now())
	p.flush()
	for name, ctx := range map[string]context.Context{"alice": alice, "carol's session": sess} {
		select {
		case <-ctx.Done():
			if !errors.Is(context.Cause(ctx), guard.ErrSessionRevoked) {
				t.Errorf("%s: cause %v, want ErrSessionRevoked", name, context.Cause(ctx))
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s's live connection was not ended", name)
		}
	}
	p.heartbeat()
	testenv.Eventually(t, "heartbeat", func() bool { return g.StateAge() < time.Second })
	if bob.Err() != nil {
		t.Errorf("bob's connection ended: %v", context.Cause(bob))
	}
	// A hold taken on an already revoked session ends at once.
	late, releaseLate := g.Hold(context.Background(), guard.Session{"acme", "alice", "a2", issued})
	defer releaseLate()
	if !errors.Is(context.Cause(late), guard.ErrSessionRevoked) {
		t.Errorf("hold on a revoked session: cause %v", context.Cause(late))
	}
}

func TestCheckDoesNotAllocate(t *testing.T) {
	p := newPublisher(t)
	for i := 0; i < 1000; i++ {
		p.user("acme", fmt.Sprintf("u%d", i), time.Now())
	}
	p.heartbeat()
	g := testenv.Guard(t, p.url, guard.Config{})
	hit := guard.Session{"acme", "u7", "s", time.Now().Add(-time.Hour)}
	miss := guard.Session{"acme", "nobody", "s", time.Now()}
	for name, s := range map[string]guard.Session{"hit": hit, "miss": miss} {
		if n := testing.AllocsPerRun(1000, func() { _ = g.Check(s) }); n != 0 {
			t.Errorf("%s: Check allocates %.1f times per call", name, n)
		}
	}
}

// TestReportsCoalesce: a burst of revocations, each applied on its own, is
// reported a few times, not once each, and the last report carries the last
// sequence applied, soon.
func TestReportsCoalesce(t *testing.T) {
	p := newPublisher(t)
	p.heartbeat()
	nc, err := nats.Connect(p.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	reports, err := nc.SubscribeSync(events.ReportPrefix + ">")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	g := testenv.Guard(t, p.url, guard.Config{Instance: "coalesce"})
	const burst = 300
	start := time.Now()
	for i := range burst {
		p.user("acme", fmt.Sprint("u", i), time.Now())
		p.flush() // one at a time: the guard catches up after each
		// Spread over 0.7 s, so that the gap, not the reports at the
		// start and the end, bounds their number.
		time.Sleep(2 * time.Millisecond)
	}
	last := g.AppliedSequence()
	testenv.Eventually(t, "every revocation applied", func() bool {
		last = g.AppliedSequence()
		return last >= burst+1
	})
	n := 0
	for {
		m, err := reports.NextMsg(2 * time.Second)
		if err != nil {
			t.Fatalf("no report of sequence %d: %v (after %d reports)", last, err, n)
		}
		n++
		var r struct {
			Data events.GuardApplied `json:"data"`
		}
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		if r.Data.AppliedSeq == last {
			break
		}
	}
	// At most one report per 20 ms (the guard's gap), whatever the speed of
	// the machine, and a few more: the report at start, the first of the
	// burst, the one after the last gap.
	t.Logf("%d reports for %d revocations in %v", n, burst, time.Since(start).Round(time.Millisecond))
	if limit := int(time.Since(start)/(20*time.Millisecond)) + 5; n > limit {
		t.Errorf("%d reports for %d revocations in %v; want at most %d", n, burst, time.Since(start).Round(time.Millisecond), limit)
	}
}
