package evictd_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evict-dev/evict/internal/bus"
	"github.com/evict-dev/evict/internal/evictd"
	"github.com/evict-dev/evict/internal/keys"
	"github.com/evict-dev/evict/internal/snapshot"
	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/pkg/client"
	"github.com/evict-dev/evict/pkg/guard"
	"github.com/evict-dev/evict/services/notifier"
)

// route is one authenticated route of the admin API, read from its
// registration so that a new route cannot escape this test.
type route struct{ method, pattern, perm string }

func adminRoutes(t *testing.T) []route {
	t.Helper()
	src, err := os.ReadFile("../../services/admin/admin.go")
	if err != nil {
		t.Fatal(err)
	}
	var rs []route
	for _, m := range regexp.MustCompile(`auth\("(\w+) ([^"]+)", (perm\w+),`).FindAllStringSubmatch(string(src), -1) {
		rs = append(rs, route{m[1], m[2], m[3]})
	}
	if len(rs) < 20 {
		t.Fatalf("found only %d routes in admin.go", len(rs))
	}
	return rs
}

// TestEveryRouteChecksCredentialRoleAndTenant: for every route, no
// credential is 401; another tenant's key is 403 (an operation of another
// tenant is 404, as if it did not exist); a viewer may only read; a sync key
// may only read and change memberships; only an operator creates tenants.
// Every refusal lands in the audit log.
func TestEveryRouteChecksCredentialRoleAndTenant(t *testing.T) {
	b := setup(t, 0)
	ctx := context.Background()
	for _, tn := range []string{"acme", "other"} {
		if _, err := b.api.CreateTenant(ctx, tn); err != nil {
			t.Fatal(err)
		}
	}
	acc, err := b.api.LogoutUser(ctx, "acme", "someone", "")
	if err != nil {
		t.Fatal(err)
	}
	pool := testenv.Pool(t, b.dbURL)
	mk := func(role string, tenants ...string) string {
		t.Helper()
		_, tok, err := keys.Create(ctx, pool, keys.Spec{Role: role, Tenants: tenants, AllTenants: len(tenants) == 0})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	creds := map[string]string{
		"none":         "",
		"garbage":      "evk_not-a-key",
		"other-admin":  mk(keys.RoleAdmin, "other"),
		"acme-viewer":  mk(keys.RoleViewer, "acme"),
		"acme-sync":    mk(keys.RoleSync, "acme"),
		"acme-admin":   mk(keys.RoleAdmin, "acme"),
		"operator":     mk(keys.RoleAdmin),
		"bootstrap":    token,
		"revoked-acme": "",
	}
	revoked, tok, err := keys.Create(ctx, pool, keys.Spec{Role: keys.RoleAdmin, Tenants: []string{"acme"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Revoke(ctx, pool, revoked.ID); err != nil {
		t.Fatal(err)
	}
	creds["revoked-acme"] = tok

	allowed := map[string]map[string]bool{ // credential -> perm -> allowed
		"acme-viewer": {"permRead": true, "permMembersRead": true},
		"acme-sync":   {"permMembersRead": true, "permMembersWrite": true},
		"acme-admin":  {"permRead": true, "permMembersRead": true, "permMembersWrite": true, "permCommand": true},
		"operator":    {"permRead": true, "permMembersRead": true, "permMembersWrite": true, "permCommand": true, "permOperator": true, "permKeys": true},
		"bootstrap":   {"permRead": true, "permMembersRead": true, "permMembersWrite": true, "permCommand": true, "permOperator": true, "permKeys": true},
	}
	fill := strings.NewReplacer("{tenant}", "acme", "{group}", "g1", "{user}", "u1", "{session}", "s1", "{device}", "d1", "{id}", acc.OperationID,
		"{key}", "0192f7a0-0000-7000-8000-000000000000")
	hc := &http.Client{Timeout: 10 * time.Second}
	n := 0
	for _, rt := range adminRoutes(t) {
		path := fill.Replace(rt.pattern)
		for name, cred := range creds {
			want := "allowed"
			switch {
			case name == "none" || name == "garbage" || name == "revoked-acme":
				want = "401"
			case name == "other-admin" && strings.Contains(rt.pattern, "{tenant}"):
				want = "403"
			case name == "other-admin" && strings.HasPrefix(rt.pattern, "/v1/operations/"): // the operation belongs to acme
				want = "404"
			case !allowed[name][rt.perm]:
				want = "403"
			}
			t.Run(rt.method+" "+rt.pattern+" as "+name, func(t *testing.T) {
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				req, _ := http.NewRequestWithContext(rctx, rt.method, "http://"+b.d.HTTPAddr+path, nil)
				if cred != "" {
					req.Header.Set("Authorization", "Bearer "+cred)
				}
				resp, err := hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close() // streams answer their headers at once
				got := resp.StatusCode
				switch want {
				case "allowed":
					if got == http.StatusUnauthorized || got == http.StatusForbidden {
						t.Errorf("got %d, want the request let through", got)
					}
				case "401":
					if got != http.StatusUnauthorized {
						t.Errorf("got %d, want 401", got)
					}
				case "403":
					if got != http.StatusForbidden {
						t.Errorf("got %d, want 403", got)
					}
				case "404":
					if got != http.StatusNotFound {
						t.Errorf("got %d, want 404", got)
					}
				}
			})
			n++
		}
	}
	var denied int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM audit_log WHERE action = 'denied'").Scan(&denied); err != nil {
		t.Fatal(err)
	}
	if denied < 3*len(adminRoutes(t)) {
		t.Errorf("%d denied requests audited; every 401 and 403 should be", denied)
	}
	t.Logf("%d route × credential cases, %d refusals audited", n, denied)
}

// TestRateLimitPerCredential: a credential past its burst gets 429 with
// Retry-After; another credential is not slowed down by it.
func TestRateLimitPerCredential(t *testing.T) {
	dbURL := testenv.Database(t)
	d, _ := startDaemon(t, dbURL, "", func(c *evictd.Config) { c.RateLimit, c.RateBurst = 1, 10 })
	ctx := context.Background()
	pool := testenv.Pool(t, dbURL)
	_, noisy, err := keys.Create(ctx, pool, keys.Spec{Role: keys.RoleViewer, AllTenants: true, Name: "noisy"})
	if err != nil {
		t.Fatal(err)
	}
	get := func(cred string) *http.Response { return getAs(t, d, "/v1/tenants/acme", cred) }
	for i := 0; i < 10; i++ {
		if code := get(noisy).StatusCode; code == http.StatusTooManyRequests {
			t.Fatalf("request %d within the burst refused", i)
		}
	}
	resp := get(noisy)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("past the burst: %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if code := get(token).StatusCode; code == http.StatusTooManyRequests {
		t.Error("another credential was limited too")
	}
}

// TestKeyManagementAPI: an operator creates, lists and revokes keys over
// the API, as with `evictd keys`; the token is shown once and works within
// its scope and role; bad requests change nothing; both acts are audited.
func TestKeyManagementAPI(t *testing.T) {
	b := setup(t, 0)
	ctx := context.Background()
	for _, tn := range []string{"acme", "globex"} {
		if _, err := b.api.CreateTenant(ctx, tn); err != nil {
			t.Fatal(err)
		}
	}
	bad := []struct {
		name string
		key  client.NewKey
		code string
	}{
		{"unknown role", client.NewKey{Role: "root", Tenants: []string{"acme"}}, "bad_request"},
		{"neither tenants nor all", client.NewKey{Role: "admin"}, "bad_request"},
		{"both tenants and all", client.NewKey{Role: "admin", Tenants: []string{"acme"}, AllTenants: true}, "bad_request"},
		{"unknown tenant", client.NewKey{Role: "viewer", Tenants: []string{"acme", "initech"}}, "tenant_not_found"},
		{"tenant with a wildcard", client.NewKey{Role: "viewer", Tenants: []string{"acme.>"}}, "invalid_identifier"},
		{"bad expiry", client.NewKey{Role: "viewer", Tenants: []string{"acme"}, ExpiresIn: "a month"}, "bad_request"},
		{"negative expiry", client.NewKey{Role: "viewer", Tenants: []string{"acme"}, ExpiresIn: "-1h"}, "bad_request"},
	}
	for _, tc := range bad {
		if _, err := b.api.CreateKey(ctx, tc.key); !client.IsCode(err, tc.code) {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
		}
	}
	if ks, err := b.api.Keys(ctx); err != nil || len(ks) != 0 {
		t.Fatalf("after refused creations: %d keys, %v; want none", len(ks), err)
	}

	k, err := b.api.CreateKey(ctx, client.NewKey{Name: "acme-board", Role: "viewer", Tenants: []string{"acme"}, ExpiresIn: "24h"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k.Token, keys.TokenPrefix) || k.Role != "viewer" || k.ExpiresAt == nil || k.ExpiresAt.Before(time.Now().Add(23*time.Hour)) {
		t.Fatalf("created %+v", k)
	}
	if code := getAs(t, b.d, "/v1/tenants/acme/sessions", k.Token).StatusCode; code != http.StatusOK {
		t.Errorf("the new viewer key reading acme: %d, want 200", code)
	}
	if code := getAs(t, b.d, "/v1/tenants/globex/sessions", k.Token).StatusCode; code != http.StatusForbidden {
		t.Errorf("the new acme key reading globex: %d, want 403", code)
	}
	viewer := client.New("http://"+b.d.HTTPAddr, k.Token, nil)
	if _, err := viewer.CreateKey(ctx, client.NewKey{Role: "admin", AllTenants: true}); !client.IsCode(err, "forbidden") {
		t.Errorf("a viewer key minting an operator key: %v, want forbidden", err)
	}
	ks, err := b.api.Keys(ctx)
	if err != nil || len(ks) != 1 || ks[0].ID != k.ID || ks[0].LastUsedAt == nil {
		t.Fatalf("listing: %+v, %v; want the one key, used", ks, err)
	}
	if err := b.api.RevokeKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if code := getAs(t, b.d, "/v1/tenants/acme/sessions", k.Token).StatusCode; code != http.StatusUnauthorized {
		t.Errorf("the revoked key: %d, want 401", code)
	}
	if err := b.api.RevokeKey(ctx, k.ID); !client.IsCode(err, "key_not_found") {
		t.Errorf("revoking twice: %v, want key_not_found", err)
	}
	if err := b.api.RevokeKey(ctx, "not-a-uuid"); !client.IsCode(err, "bad_request") {
		t.Errorf("revoking a malformed id: %v, want bad_request", err)
	}
	pool := testenv.Pool(t, b.dbURL)
	var created, revoked int
	if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE action = 'key.create'), count(*) FILTER (WHERE action = 'key.revoke')
		FROM audit_log WHERE detail->>'key_id' = $1`, k.ID).Scan(&created, &revoked); err != nil {
		t.Fatal(err)
	}
	if created != 1 || revoked != 1 {
		t.Errorf("audit: %d key.create, %d key.revoke for the key; want 1 and 1", created, revoked)
	}
}

// TestAuthFailuresPerAddress: past a burst, failed authentications from one
// address get 429 with Retry-After and are audited as counts, not one row
// each (a flood of bad tokens cannot fill the audit log), while a valid token
// from that address still works.
func TestAuthFailuresPerAddress(t *testing.T) {
	dbURL := testenv.Database(t)
	const burst = 5
	d, _ := startDaemon(t, dbURL, "", func(c *evictd.Config) { c.AuthFailureBurst = burst })
	pool := testenv.Pool(t, dbURL)
	get := func(cred string) *http.Response { return getAs(t, d, "/v1/tenants/acme", cred) }
	const flood = 50
	codes := map[int]int{}
	for i := 0; i < flood; i++ {
		resp := get(keys.TokenPrefix + "forged" + strconv.Itoa(i))
		codes[resp.StatusCode]++
		if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	// One failure per second refills: allow for the seconds the flood took.
	if codes[http.StatusUnauthorized] < burst || codes[http.StatusTooManyRequests] < flood/2 || len(codes) != 2 {
		t.Fatalf("%d bad tokens got %v; want %d or a few more 401s, then 429s", flood, codes, burst)
	}
	// Every refusal is audited: the 401s one by one, the 429s counted, in
	// one row per second at most.
	var rows, individual, counted int
	testenv.Eventually(t, "the rate-limited refusals audited", func() bool {
		err := pool.QueryRow(context.Background(), `SELECT count(*), count(*) FILTER (WHERE NOT detail ? 'count'),
			coalesce(sum((detail->>'count')::int), 0) FROM audit_log WHERE action = 'denied'`).Scan(&rows, &individual, &counted)
		return err == nil && counted == codes[http.StatusTooManyRequests]
	})
	if individual != codes[http.StatusUnauthorized] || rows-individual > 10 {
		t.Errorf("audit: %d rows, %d of single refusals (want %d, one per 401), the rest counting %d 429s",
			rows, individual, codes[http.StatusUnauthorized], counted)
	}
	if code := get(token).StatusCode; code != http.StatusOK && code != http.StatusNotFound {
		t.Errorf("a valid token from the flooding address: %d, want it served", code)
	}
}

// TestEmbeddedNATSGuardCredential: evictd's embedded NATS, as shipped,
// requires credentials; the guard credential it hands to session holders
// reads the state and reports, but cannot publish a revocation, history or
// a snapshot, nor touch the streams.
func TestEmbeddedNATSGuardCredential(t *testing.T) {
	b := setup(t, 1) // the guard itself runs on the guard credential
	if _, err := nats.Connect(strings.Replace(b.d.NATSURL, "guard:", "guard:wrong", 1)); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	if u, _ := url.Parse(b.d.NATSURL); u.User == nil || u.User.Username() != "guard" {
		t.Fatalf("holders' URL %s does not carry the guard user", evictd.RedactURL(b.d.NATSURL))
	}
	violations := make(chan error, 10)
	nc, err := nats.Connect(b.d.NATSURL, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	for _, subject := range []string{"evict.state.acme.user.mallory", "evict.state.acme.tenant", "evict.events.acme.member.removed", "evict.state.heartbeat",
		"evict.snapshot.acme.head"} {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond) // a refused publish is never acknowledged
		if _, err := js.Publish(pctx, subject, []byte(`{}`)); err == nil {
			t.Errorf("guard credential published to %s", subject)
		}
		cancel()
		expectViolation(t, violations, "publish "+subject)
	}
	dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if err := js.DeleteStream(dctx, "EVICT_STATE"); err == nil {
		t.Error("guard credential deleted the state stream")
	}
}

// TestTenantGuardKey: a guard key (`evictd keys create --role guard`) is a
// NATS credential limited to its tenants on the embedded server as shipped.
// A guard on it loads its tenant's state, registers sessions and confirms
// logouts; the same credential cannot publish a revocation, read another
// tenant's state by any route (a consumer filtered on it, on everything, on
// several subjects; a plain subscription; a direct get; another guard's
// inbox), register a session or report in another tenant, nor be used
// against the admin API.
func TestTenantGuardKey(t *testing.T) {
	b := setup(t, 0)
	ctx := context.Background()
	pool := testenv.Pool(t, b.dbURL)
	for _, tenant := range []string{"acme", "globex"} {
		if _, err := b.api.CreateTenant(ctx, tenant); err != nil {
			t.Fatal(err)
		}
	}
	_, acmeKey, err := keys.Create(ctx, pool, keys.Spec{Role: keys.RoleGuard, Tenants: []string{"acme"}})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(b.d.NATSURL)
	u.User = nil
	natsURL := u.String()

	// Something of globex's to steal: a revoked user.
	if _, err := b.api.LogoutUser(ctx, "globex", "gina", "test"); err != nil {
		t.Fatal(err)
	}
	b.waitPublished(t)

	// The guard works on its tenant: it loads, tracks, and its report
	// completes the operation.
	g := testenv.Guard(t, natsURL, guard.Config{Tenants: []string{"acme"}, ReportInterval: 100 * time.Millisecond}, guard.KeyOptions(acmeKey)...)
	s, err := g.Track(ctx, guard.NewSession{Tenant: "acme", User: "alice", ID: "s-alice", Client: "web"})
	if err != nil {
		t.Fatal(err)
	}
	acc, err := b.api.LogoutUser(ctx, "acme", "alice", "test")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "acme logout enforced", func() bool { return errors.Is(g.Check(s), guard.ErrSessionRevoked) })
	op, err := b.api.WaitOperation(ctx, acc.OperationID, 30*time.Second)
	if err != nil || op.Summary != "completed" || op.Counts["enforced"] != 1 {
		t.Fatalf("acme operation = %+v, %v; want completed with the session enforced by its holder", op, err)
	}
	if err := g.Check(guard.Session{Tenant: "globex", User: "gina", ID: "s-gina", IssuedAt: time.Now().Add(-time.Hour)}); err != nil {
		t.Fatalf("the acme guard knows globex's state: %v", err)
	}
	if _, err := g.Track(ctx, guard.NewSession{Tenant: "globex", User: "mallory", ID: "s-m", Client: "web"}); err == nil {
		t.Fatal("the acme guard registered a session in globex")
	}

	violations := make(chan error, 64)
	nc, err := nats.Connect(natsURL, append(guard.KeyOptions(acmeKey),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stream, err := js.Stream(ctx, "EVICT_STATE")
	if err != nil {
		t.Fatalf("the acme key cannot see the state stream: %v", err)
	}
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, time.Second) }

	// Reading globex's state.
	for _, filters := range [][]string{
		{"evict.state.globex.>"}, {"evict.state.>"}, {"evict.state.*.user.gina"}, {">"},
		{"evict.state.acme.>", "evict.state.globex.>"}, {"evict.state.heartbeat", "evict.state.globex.user.gina"},
	} {
		c, cancel := short()
		if _, err := stream.OrderedConsumer(c, jetstream.OrderedConsumerConfig{FilterSubjects: filters}); err == nil {
			t.Errorf("the acme key created a consumer on %v", filters)
		}
		cancel()
	}
	c, cancel := short()
	if _, err := stream.GetLastMsgForSubject(c, "evict.state.globex.user.gina"); err == nil {
		t.Error("the acme key read globex's state with a direct get")
	}
	cancel()
	// Reading globex's snapshot: its head, its chunks. Its own it may read.
	if _, err := snapshot.Build(ctx, b.serviceJS(t), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.ReadTenant(ctx, js, "acme", 5*time.Second); err != nil {
		t.Errorf("the acme key cannot read acme's snapshot: %v", err)
	}
	c, cancel = short()
	if _, err := snapshot.ReadTenant(c, js, "globex", time.Second); err == nil {
		t.Error("the acme key read globex's snapshot")
	}
	cancel()
	for _, filters := range [][]string{{snapshot.TenantSubjects("globex")}, {"evict.snapshot.>"}, {">"}} {
		c, cancel := short()
		if _, err := js.OrderedConsumer(c, snapshot.TenantStream, jetstream.OrderedConsumerConfig{FilterSubjects: filters}); err == nil {
			t.Errorf("the acme key created a consumer of %s on %v", snapshot.TenantStream, filters)
		}
		cancel()
	}
	// The notifiers' durable consumer reads every tenant, and its name is
	// well known: the key may not read it, nor delete or redefine it.
	svcJS := b.serviceJS(t)
	if _, err := svcJS.CreateOrUpdateConsumer(ctx, "EVICT_STATE", notifier.ConsumerConfig()); err != nil {
		t.Fatal(err)
	}
	// Something of globex's waiting in it.
	if _, err := b.api.LogoutUser(ctx, "globex", "gary", "test"); err != nil {
		t.Fatal(err)
	}
	b.waitPublished(t)
	for _, attempt := range []struct {
		name string
		do   func(context.Context) error
	}{
		{"look it up", func(c context.Context) error { _, err := stream.Consumer(c, bus.NotifierDurable); return err }},
		{"pull from it", func(c context.Context) error {
			_, err := nc.Request("$JS.API.CONSUMER.MSG.NEXT.EVICT_STATE."+bus.NotifierDurable, []byte(`{"batch":1}`), time.Second)
			return err
		}},
		{"delete it", func(c context.Context) error { return stream.DeleteConsumer(c, bus.NotifierDurable) }},
		{"narrow it to acme", func(c context.Context) error {
			cfg := notifier.ConsumerConfig()
			cfg.FilterSubjects, cfg.FilterSubject = nil, "evict.state.acme.>"
			_, err := stream.CreateOrUpdateConsumer(c, cfg)
			return err
		}},
	} {
		c, cancel := short()
		if err := attempt.do(c); err == nil {
			t.Errorf("the acme key could %s", attempt.name)
		}
		cancel()
	}
	if info, err := svcJS.Consumer(ctx, "EVICT_STATE", bus.NotifierDurable); err != nil {
		t.Errorf("the notifiers' durable after the attempts: %v", err)
	} else if got := info.CachedInfo().Config.FilterSubjects; !slices.Equal(got, notifier.ConsumerConfig().FilterSubjects) {
		t.Errorf("the notifiers' durable filters %q after the attempts", got)
	}
	// Positive control: its own tenant and the heartbeat are readable.
	for _, f := range []string{"evict.state.acme.>", "evict.state.heartbeat"} {
		c, cancel := short()
		if _, err := stream.OrderedConsumer(c, jetstream.OrderedConsumerConfig{FilterSubjects: []string{f}}); err != nil {
			t.Errorf("the acme key cannot read %s: %v", f, err)
		}
		cancel()
	}
	drain := func() {
		for {
			select {
			case <-violations:
			case <-time.After(200 * time.Millisecond):
				return
			}
		}
	}
	drain()
	// Subscriptions: globex's subjects, every inbox, evict's own traffic.
	for _, subject := range []string{"evict.state.globex.>", "_INBOX.>", "evict.report.>", "evict.rpc.sessions.>", ">"} {
		if _, err := nc.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		expectViolation(t, violations, "subscribe "+subject)
	}
	// Publishing: revocations, history, another tenant's reports and
	// session registrations.
	for _, subject := range []string{"evict.state.acme.user.mallory", "evict.state.globex.tenant", "evict.events.acme.member.removed",
		"evict.state.heartbeat", "evict.report.globex.api-1.applied", "evict.report.api-1.applied", "evict.rpc.sessions.globex.register",
		"evict.snapshot.acme.head", "evict.snapshot.acme.c.1.0"} {
		if err := nc.Publish(subject, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		expectViolation(t, violations, "publish "+subject)
	}

	// The key is a NATS credential only; admin keys and revoked keys are
	// not NATS credentials.
	if code := getAs(t, b.d, "/v1/tenants/acme/sessions", acmeKey).StatusCode; code != http.StatusForbidden {
		t.Errorf("a guard key against the admin API: %d, want 403", code)
	}
	_, adminKey, err := keys.Create(ctx, pool, keys.Spec{Role: keys.RoleAdmin, Tenants: []string{"acme"}})
	if err != nil {
		t.Fatal(err)
	}
	k, revoked, err := keys.Create(ctx, pool, keys.Spec{Role: keys.RoleGuard, Tenants: []string{"acme"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Revoke(ctx, pool, k.ID); err != nil {
		t.Fatal(err)
	}
	// Revoking the key also closes its open connections.
	live, err := nats.Connect(natsURL, append(guard.KeyOptions(acmeKey), nats.NoReconnect())...)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	acmeID, err := keys.Lookup(ctx, pool, acmeKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Revoke(ctx, pool, acmeID.ID); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the revoked key's connection closed", live.IsClosed)
	for name, tok := range map[string]string{"admin key": adminKey, "revoked guard key": revoked, "revoked live key": acmeKey, "unknown key": keys.TokenPrefix + "x"} {
		if nc, err := nats.Connect(natsURL, guard.KeyOptions(tok)...); err == nil {
			nc.Close()
			t.Errorf("NATS accepted the %s", name)
		}
	}
}

// getAs GETs path from d's admin API with cred as the bearer token.
func getAs(t *testing.T, d *evictd.Daemon, path, cred string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+d.HTTPAddr+path, nil)
	req.Header.Set("Authorization", "Bearer "+cred)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// expectViolation waits for the permissions violation NATS reports
// (asynchronously) for what the connection just tried.
func expectViolation(t *testing.T, violations <-chan error, what string) {
	t.Helper()
	select {
	case err := <-violations:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("%s: %v, want a permissions violation", what, err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("%s: no permissions violation", what)
	}
}

// TestNotifierCredential: the embedded server's notifier user (for
// cmd/evict-push) reaches its durable consumer and nothing else: no state
// or history published, no other consumer, no other client's inbox.
func TestNotifierCredential(t *testing.T) {
	b := setup(t, 0)
	ctx := context.Background()
	if u, _ := url.Parse(b.d.NotifierNATSURL); u.User == nil || u.User.Username() != bus.NotifierUser {
		t.Fatalf("notifier URL %s does not carry the notifier user", evictd.RedactURL(b.d.NotifierNATSURL))
	}
	violations := make(chan error, 16)
	nc, err := nats.Connect(b.d.NotifierNATSURL, nats.CustomInboxPrefix(bus.NotifierInbox),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, time.Second) }
	c, cancel := short()
	if _, err := js.CreateOrUpdateConsumer(c, "EVICT_STATE", notifier.ConsumerConfig()); err != nil {
		t.Errorf("the notifier cannot create its consumer: %v", err)
	}
	cancel()
	for _, name := range []string{"spy", "evict-push-2"} {
		c, cancel := short()
		if _, err := js.CreateOrUpdateConsumer(c, "EVICT_STATE", jetstream.ConsumerConfig{Durable: name}); err == nil {
			t.Errorf("the notifier created consumer %s", name)
		}
		cancel()
	}
	c, cancel = short()
	if _, err := js.CreateOrUpdateConsumer(c, "EVICT_EVENTS", jetstream.ConsumerConfig{Durable: bus.NotifierDurable}); err == nil {
		t.Error("the notifier read the history stream")
	}
	cancel()
	for len(violations) > 0 {
		<-violations
	}
	for _, subject := range []string{"evict.state.acme.user.x", "evict.events.acme.user.revoked", "evict.state.heartbeat"} {
		if err := nc.Publish(subject, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		expectViolation(t, violations, "publish "+subject)
	}
	if _, err := nc.SubscribeSync("_INBOX.>"); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, violations, "subscribe _INBOX.>")
}
