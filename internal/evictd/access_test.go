package evictd_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evict-dev/evict/internal/evictd"
	"github.com/evict-dev/evict/internal/keys"
	"github.com/evict-dev/evict/internal/testenv"
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
		"operator":    {"permRead": true, "permMembersRead": true, "permMembersWrite": true, "permCommand": true, "permOperator": true},
		"bootstrap":   {"permRead": true, "permMembersRead": true, "permMembersWrite": true, "permCommand": true, "permOperator": true},
	}
	fill := strings.NewReplacer("{tenant}", "acme", "{group}", "g1", "{user}", "u1", "{session}", "s1", "{device}", "d1", "{id}", acc.OperationID)
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
			case name == "other-admin": // the operation belongs to acme
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
	get := func(cred string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+d.HTTPAddr+"/v1/tenants/acme", nil)
		req.Header.Set("Authorization", "Bearer "+cred)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
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

// TestEmbeddedNATSGuardCredential: evictd's embedded NATS, as shipped,
// requires credentials; the guard credential it hands to session holders
// reads the state and reports, but cannot publish a revocation or history,
// nor touch the streams.
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
	for _, subject := range []string{"evict.state.acme.user.mallory", "evict.state.acme.tenant", "evict.events.acme.member.removed", "evict.state.heartbeat"} {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond) // a refused publish is never acknowledged
		if _, err := js.Publish(pctx, subject, []byte(`{}`)); err == nil {
			t.Errorf("guard credential published to %s", subject)
		}
		cancel()
		select {
		case err := <-violations:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Errorf("%s: %v, want a permissions violation", subject, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s: no permissions violation reported", subject)
		}
	}
	dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if err := js.DeleteStream(dctx, "EVICT_STATE"); err == nil {
		t.Error("guard credential deleted the state stream")
	}
}
