package evictd_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/evict-dev/evict/internal/evictd"
	"github.com/evict-dev/evict/internal/pushtest"
	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/pkg/client"
	"github.com/evict-dev/evict/services/push/provider"
	"github.com/evict-dev/evict/services/push/provider/apns"
	"github.com/evict-dev/evict/services/push/provider/fcm"
	"github.com/evict-dev/evict/services/push/provider/webhook"
)

// fakeAPNs is a local HTTP/2 TLS server that answers like APNs and counts
// the pushes each device token receives.
type fakeAPNs struct {
	srv  *httptest.Server
	mu   sync.Mutex
	hits map[string]int
	bad  []string
}

func newFakeAPNs(t testing.TB, unregistered string) *fakeAPNs {
	t.Helper()
	f := &fakeAPNs{hits: map[string]int{}}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
		f.mu.Lock()
		defer f.mu.Unlock()
		if !ok || r.Method != http.MethodPost || r.ProtoMajor != 2 || !strings.HasPrefix(r.Header.Get("Authorization"), "bearer ") ||
			r.Header.Get("apns-push-type") != "background" || r.Header.Get("apns-topic") != "com.example.field" {
			f.bad = append(f.bad, fmt.Sprintf("%s %s proto %d", r.Method, r.URL.Path, r.ProtoMajor))
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		f.hits[token]++
		w.Header().Set("apns-id", r.Header.Get("apns-id"))
		switch token {
		case unregistered:
			w.WriteHeader(http.StatusGone)
			fmt.Fprint(w, `{"reason":"Unregistered","timestamp":1700000000000}`)
		case "refused-token": // a push APNs refuses for good
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			fmt.Fprint(w, `{"reason":"PayloadTooLarge"}`)
		}
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	f.srv = srv
	return f
}

func (f *fakeAPNs) sender(t testing.TB) provider.Sender {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := apns.New(apns.Config{BaseURL: f.srv.URL, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		KeyID: "ABC123DEFG", TeamID: "TEAM123456", Topic: "com.example.field", HTTPClient: f.srv.Client(), Logger: testenv.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *fakeAPNs) counts() (total int, hits map[string]int, bad []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	hits = make(map[string]int, len(f.hits))
	for k, v := range f.hits {
		hits[k] = v
		total += v
	}
	return total, hits, append([]string(nil), f.bad...)
}

// apnsDaemon starts evictd pushing to apnsSrv, with a tenant "field".
func apnsDaemon(t *testing.T, apnsSrv *fakeAPNs) (*client.Client, *pgxpool.Pool) {
	t.Helper()
	dbURL := testenv.Database(t)
	d, _ := startDaemon(t, dbURL, "", func(c *evictd.Config) {
		c.PushSenders = map[string]provider.Sender{"apns": apnsSrv.sender(t)}
	})
	api := client.New("http://"+d.HTTPAddr, token, nil)
	if _, err := api.CreateTenant(context.Background(), "field"); err != nil {
		t.Fatal(err)
	}
	return api, testenv.Pool(t, dbURL)
}

// TestTenantLogoutPushesEveryDeviceOnce: a tenant-wide logout reaches each
// of 5,000 mobile devices with exactly one APNs push; a token APNs calls
// Unregistered is removed; the operation shows every push.
func TestTenantLogoutPushesEveryDeviceOnce(t *testing.T) {
	apnsSrv := newFakeAPNs(t, "dead-token")
	api, pool := apnsDaemon(t, apnsSrv)
	ctx := context.Background()
	const devices = 5000
	if _, err := pool.Exec(ctx, `INSERT INTO sessions (tenant_id, session_id, user_id, client, issued_at, push_provider, push_token)
		SELECT 'field', 'm' || i, 'tech-' || i, 'mobile', now() - interval '1 minute', 'apns', 'token-' || i
		FROM generate_series(1, $1) AS i`, devices); err != nil {
		t.Fatal(err)
	}
	// The same device under a second session still gets one push.
	if _, err := pool.Exec(ctx, `INSERT INTO sessions (tenant_id, session_id, user_id, client, issued_at, push_provider, push_token)
		VALUES ('field', 'm1-again', 'tech-1', 'mobile', now() - interval '1 minute', 'apns', 'token-1')`); err != nil {
		t.Fatal(err)
	}
	if _, err := api.RegisterSession(ctx, "field", client.NewSession{SessionID: "gone", UserID: "tech-x", Client: "mobile",
		Push: &client.PushTarget{Provider: "apns", Token: "dead-token"}}); err != nil {
		t.Fatal(err)
	}

	if err := api.Do(ctx, http.MethodPost, "/v1/tenants/field/sessions", map[string]any{
		"session_id": "refused", "user_id": "tech-y", "client": "mobile",
		"push": map[string]string{"provider": "apns", "token": "refused-token"}}, nil); err != nil {
		t.Fatal(err)
	}
	acc, err := api.LogoutTenant(ctx, "field", "end of shift")
	if err != nil {
		t.Fatal(err)
	}
	var op client.Operation
	testenv.Eventually(t, "every push recorded", func() bool {
		if err := api.Do(ctx, http.MethodGet, "/v1/operations/"+acc.OperationID, nil, &op); err != nil {
			return false
		}
		return op.PushCounts["pushed"] == devices && op.PushCounts["token_removed"] == 1 && op.PushCounts["failed"] == 1
	})
	total, hits, bad := apnsSrv.counts()
	if len(bad) > 0 {
		t.Fatalf("requests APNs would refuse: %v", bad[:min(len(bad), 5)])
	}
	if total != devices+2 || len(hits) != devices+2 {
		t.Fatalf("%d pushes to %d devices, want %d to %d", total, len(hits), devices+2, devices+2)
	}
	for tok, n := range hits {
		if n != 1 {
			t.Fatalf("device %s got %d pushes", tok, n)
		}
	}
	var left int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM sessions WHERE push_token = 'dead-token'").Scan(&left); err != nil || left != 0 {
		t.Errorf("the unregistered token is still on %d sessions (%v)", left, err)
	}
	var dead struct {
		DeadLetters []struct {
			SessionID string `json:"session_id"`
			Status    string `json:"status"`
			Attempts  int    `json:"attempts"`
		} `json:"dead_letters"`
	}
	if err := api.Do(ctx, http.MethodGet, "/v1/tenants/field/push/dead-letters", nil, &dead); err != nil {
		t.Fatal(err)
	}
	if len(dead.DeadLetters) != 1 || dead.DeadLetters[0].SessionID != "refused" || dead.DeadLetters[0].Status != "failed" || dead.DeadLetters[0].Attempts != 1 {
		t.Errorf("dead letters: %+v; want the refused push, failed after 1 attempt", dead.DeadLetters)
	}
}

// TestBulkLogoutPushesEveryDevice: a logout of 2,500 users is published as
// three users.revoked events; the notifier expands each batch, so each
// user's device gets one push and a device of a user not named gets none.
func TestBulkLogoutPushesEveryDevice(t *testing.T) {
	apnsSrv := newFakeAPNs(t, "")
	api, pool := apnsDaemon(t, apnsSrv)
	ctx := context.Background()
	const n = 2500
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("tech-%05d", i)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO sessions (tenant_id, session_id, user_id, client, issued_at, push_provider, push_token)
		SELECT 'field', 'm-' || u, u, 'mobile', now() - interval '1 minute', 'apns', 'token-' || u FROM unnest($1::text[]) AS u
		UNION ALL
		SELECT 'field', 'm-bystander', 'bystander', 'mobile', now() - interval '1 minute', 'apns', 'token-bystander'`, users); err != nil {
		t.Fatal(err)
	}
	acc, err := api.LogoutUsers(ctx, "field", users, "site closed")
	if err != nil {
		t.Fatal(err)
	}
	var op client.Operation
	testenv.Eventually(t, "every push recorded", func() bool {
		if err := api.Do(ctx, http.MethodGet, "/v1/operations/"+acc.OperationID, nil, &op); err != nil {
			return false
		}
		return op.PushCounts["pushed"] == n
	})
	total, hits, bad := apnsSrv.counts()
	if len(bad) > 0 {
		t.Fatalf("requests APNs would refuse: %v", bad[:min(len(bad), 5)])
	}
	if total != n || len(hits) != n || hits["token-bystander"] != 0 {
		t.Fatalf("%d pushes to %d devices (bystander %d), want %d to %d (bystander 0)", total, len(hits), hits["token-bystander"], n, n)
	}
	var batches int
	if err := pool.QueryRow(ctx, "SELECT count(DISTINCT event_id) FROM push_deliveries").Scan(&batches); err != nil || batches != 3 {
		t.Errorf("deliveries of %d events (%v), want 3 users.revoked batches", batches, err)
	}
}

// pushRun is evictd with one push provider, a tenant "field" with one
// mobile session per device token registered through the API, logged out
// as a whole.
type pushRun struct {
	api   *client.Client
	pool  *pgxpool.Pool
	op    string            // the logout's operation id
	users map[string]string // token → user
}

// session is the session registered for token.
func session(token string) string { return "s-" + token }

func logoutDevices(t *testing.T, providerName string, sender provider.Sender, tokens []string, opts ...func(*evictd.Config)) *pushRun {
	t.Helper()
	dbURL := testenv.Database(t)
	d, _ := startDaemon(t, dbURL, "", append([]func(*evictd.Config){func(c *evictd.Config) {
		c.PushSenders = map[string]provider.Sender{providerName: sender}
	}}, opts...)...)
	r := &pushRun{api: client.New("http://"+d.HTTPAddr, token, nil), pool: testenv.Pool(t, dbURL), users: map[string]string{}}
	ctx := t.Context()
	if _, err := r.api.CreateTenant(ctx, "field"); err != nil {
		t.Fatal(err)
	}
	for i, tok := range tokens {
		r.users[tok] = fmt.Sprintf("tech-%d", i%50)
		if _, err := r.api.RegisterSession(ctx, "field", client.NewSession{SessionID: session(tok), UserID: r.users[tok],
			Client: "mobile", Push: &client.PushTarget{Provider: providerName, Token: tok}}); err != nil {
			t.Fatal(err)
		}
	}
	acc, err := r.api.LogoutTenant(ctx, "field", "lost phone")
	if err != nil {
		t.Fatal(err)
	}
	r.op = acc.OperationID
	return r
}

// opPush is a device push as the operation status lists it.
type opPush struct {
	SessionID string `json:"session_id"`
	Provider  string `json:"provider"`
	Status    string `json:"status"`
	Attempts  int    `json:"attempts"`
}

// settle waits until the operation's pushes are counted as want, and
// returns them by session.
func (r *pushRun) settle(t *testing.T, want map[string]int) map[string]opPush {
	t.Helper()
	type status struct {
		Pushes     []opPush       `json:"pushes"`
		PushCounts map[string]int `json:"push_counts"`
	}
	var op status
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last push counts: %v", op.PushCounts)
		}
	})
	testenv.Eventually(t, fmt.Sprintf("push counts %v", want), func() bool {
		op = status{} // decoding into a map merges
		return r.api.Do(t.Context(), http.MethodGet, "/v1/operations/"+r.op, nil, &op) == nil && maps.Equal(op.PushCounts, want)
	})
	bySession := map[string]opPush{}
	for _, p := range op.Pushes {
		bySession[p.SessionID] = p
	}
	return bySession
}

// eventID is the logout's event id, as the notifier recorded it.
func (r *pushRun) eventID(t *testing.T) string {
	t.Helper()
	var ids []string
	rows, err := r.pool.Query(t.Context(), "SELECT DISTINCT event_id::text FROM push_deliveries")
	if err == nil {
		ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil || len(ids) != 1 {
		t.Fatalf("event ids of the deliveries: %v (%v), want one", ids, err)
	}
	return ids[0]
}

func deviceTokens(prefix string, n int, special ...string) []string {
	tokens := make([]string, 0, n+len(special))
	for i := range n {
		tokens = append(tokens, fmt.Sprintf("%s-%d", prefix, i))
	}
	return append(tokens, special...)
}

// TestFCMLogoutThroughNotifier: a tenant-wide logout of devices registered
// with FCM reaches each through the local FCM (which checks the OAuth
// token exchange, the bearer token and the message) exactly once, with the
// event id; UNREGISTERED removes the token; UNAVAILABLE with Retry-After
// is retried no sooner, then succeeds.
func TestFCMLogoutThroughNotifier(t *testing.T) {
	fake := pushtest.NewFCM(t, time.Now)
	fake.Reply("fcm-dead", pushtest.Answer{Status: 404,
		Body: pushtest.FCMError(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")})
	fake.Reply("fcm-flaky", pushtest.Answer{Status: 503, RetryAfter: "1",
		Body: pushtest.FCMError(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE")}, pushtest.Answer{})
	sender, err := fcm.New(fcm.Config{CredentialsJSON: fake.CredentialsJSON(), BaseURL: fake.Server.URL,
		HTTPClient: fake.Client, Logger: testenv.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	const devices = 200
	tokens := deviceTokens("fcm", devices, "fcm-dead", "fcm-flaky")
	// A short backoff: only Retry-After can hold the retry back a second.
	r := logoutDevices(t, "fcm", sender, tokens, func(c *evictd.Config) { c.PushRetryBackoff = 10 * time.Millisecond })

	pushes := r.settle(t, map[string]int{"pushed": devices + 1, "token_removed": 1})
	if p := pushes[session("fcm-dead")]; p.Status != "token_removed" || p.Provider != "fcm" {
		t.Errorf("the unregistered device's push: %+v, want token_removed", p)
	}
	if p := pushes[session("fcm-flaky")]; p.Status != "pushed" || p.Attempts != 2 {
		t.Errorf("the device FCM was unavailable for: %+v, want pushed on the second attempt", p)
	}
	var left int
	if err := r.pool.QueryRow(t.Context(), "SELECT count(*) FROM sessions WHERE push_token = 'fcm-dead'").Scan(&left); err != nil || left != 0 {
		t.Errorf("the unregistered token is still on %d sessions (%v)", left, err)
	}

	eventID := r.eventID(t)
	fetches, sends := fake.Stats()
	if fetches != 1 {
		t.Errorf("%d access token exchanges, want 1 shared by every send", fetches)
	}
	byToken := map[string][]pushtest.FCMSend{}
	for _, s := range sends {
		byToken[s.Message.Token] = append(byToken[s.Message.Token], s)
		m := s.Message
		want := map[string]string{"type": "logout", "tenant": "field", "user": r.users[m.Token], "session": session(m.Token),
			"operation_id": r.op, "event_id": eventID}
		if s.Path != "/v1/projects/"+pushtest.FCMProject+"/messages:send" || !maps.Equal(m.Data, want) || m.Android.Priority != "HIGH" {
			t.Fatalf("message to %s at %s: data %v, android %+v; want data %v, HIGH", m.Token, s.Path, m.Data, m.Android, want)
		}
	}
	for _, tok := range tokens {
		want := 1
		if tok == "fcm-flaky" {
			want = 2
		}
		if len(byToken[tok]) != want {
			t.Errorf("device %s got %d messages, want %d", tok, len(byToken[tok]), want)
		}
	}
	if len(byToken) != len(tokens) {
		t.Errorf("messages to %d tokens, want %d", len(byToken), len(tokens))
	}
	if f := byToken["fcm-flaky"]; len(f) == 2 && f[1].At.Sub(f[0].At) < time.Second {
		t.Errorf("retried %s after UNAVAILABLE with Retry-After: 1", f[1].At.Sub(f[0].At))
	}
}

// TestWebhookLogoutThroughNotifier: a tenant-wide logout of devices behind
// an in-house gateway reaches each exactly once as a Standard Webhooks
// request whose signature the gateway verifies; a 5xx is retried with the
// same webhook-id; a device the gateway keeps failing for lands in the
// dead-letter list once retries are exhausted.
func TestWebhookLogoutThroughNotifier(t *testing.T) {
	gw := pushtest.NewGateway(t, pushtest.WebhookSecret, time.Now)
	gw.Reply("wh-flaky", pushtest.Answer{Status: 500}, pushtest.Answer{})
	gw.Reply("wh-down", pushtest.Answer{Status: 503})
	sender, err := webhook.New(webhook.Config{URL: gw.Server.URL + "/push", Secret: pushtest.WebhookSecret, HTTPClient: gw.Client})
	if err != nil {
		t.Fatal(err)
	}
	const devices, attempts = 200, 3
	tokens := deviceTokens("wh", devices, "wh-flaky", "wh-down")
	r := logoutDevices(t, "webhook", sender, tokens, func(c *evictd.Config) {
		c.PushMaxAttempts, c.PushRetryBackoff = attempts, 10*time.Millisecond
	})

	pushes := r.settle(t, map[string]int{"pushed": devices + 1, "dead": 1})
	if p := pushes[session("wh-flaky")]; p.Status != "pushed" || p.Attempts != 2 {
		t.Errorf("the device the gateway failed once for: %+v, want pushed on the second attempt", p)
	}
	eventID := r.eventID(t)
	var dead struct {
		DeadLetters []struct {
			EventID     string `json:"event_id"`
			OperationID string `json:"operation_id"`
			SessionID   string `json:"session_id"`
			Provider    string `json:"provider"`
			Status      string `json:"status"`
			Attempts    int    `json:"attempts"`
			LastError   string `json:"last_error"`
		} `json:"dead_letters"`
	}
	if err := r.api.Do(t.Context(), http.MethodGet, "/v1/tenants/field/push/dead-letters", nil, &dead); err != nil {
		t.Fatal(err)
	}
	if len(dead.DeadLetters) != 1 {
		t.Fatalf("dead letters %+v, want the one push the gateway kept refusing", dead.DeadLetters)
	}
	if d := dead.DeadLetters[0]; d.SessionID != session("wh-down") || d.Provider != "webhook" || d.Status != "dead" ||
		d.Attempts != attempts || d.EventID != eventID || d.OperationID != r.op || d.LastError == "" {
		t.Errorf("dead letter %+v, want %s's push, dead after %d attempts, with its error", d, session("wh-down"), attempts)
	}

	byToken := map[string][]pushtest.Webhook{}
	ids := map[string]bool{}
	for _, w := range gw.Requests() {
		tok := w.Event.Data.Token
		byToken[tok] = append(byToken[tok], w)
		ids[w.Header.Get("webhook-id")] = true
		want := map[string]string{"type": "logout", "tenant": "field", "user": r.users[tok], "session": session(tok),
			"operation_id": r.op, "event_id": eventID}
		if w.Event.Type != webhook.EventType || !maps.Equal(w.Event.Data.Payload, want) {
			t.Fatalf("webhook for %s: %s %v, want %s %v", tok, w.Event.Type, w.Event.Data.Payload, webhook.EventType, want)
		}
	}
	for _, tok := range tokens {
		want := map[string]int{"wh-flaky": 2, "wh-down": attempts}[tok]
		if want == 0 {
			want = 1
		}
		reqs := byToken[tok]
		if len(reqs) != want {
			t.Errorf("device %s: %d requests, want %d", tok, len(reqs), want)
		}
		for _, w := range reqs[1:] {
			if w.Header.Get("webhook-id") != reqs[0].Header.Get("webhook-id") {
				t.Errorf("device %s: retried with webhook-id %s after %s; a receiver could not drop the repeat",
					tok, w.Header.Get("webhook-id"), reqs[0].Header.Get("webhook-id"))
			}
		}
	}
	if len(byToken) != len(tokens) || len(ids) != len(tokens) {
		t.Errorf("requests for %d devices with %d webhook-ids, want %d of each", len(byToken), len(ids), len(tokens))
	}
}
