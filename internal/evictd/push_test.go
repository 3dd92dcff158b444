package evictd_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/evict-dev/evict/internal/evictd"
	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/pkg/client"
	"github.com/evict-dev/evict/services/push/provider"
	"github.com/evict-dev/evict/services/push/provider/apns"
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

// TestTenantLogoutPushesEveryDeviceOnce: a tenant-wide logout reaches each
// of 5,000 mobile devices with exactly one APNs push; a token APNs calls
// Unregistered is removed; the operation shows every push.
func TestTenantLogoutPushesEveryDeviceOnce(t *testing.T) {
	apnsSrv := newFakeAPNs(t, "dead-token")
	dbURL := testenv.Database(t)
	d, _ := startDaemon(t, dbURL, "", func(c *evictd.Config) {
		c.PushSenders = map[string]provider.Sender{"apns": apnsSrv.sender(t)}
	})
	api := client.New("http://"+d.HTTPAddr, token, nil)
	ctx := context.Background()
	if _, err := api.CreateTenant(ctx, "field"); err != nil {
		t.Fatal(err)
	}
	const devices = 5000
	pool := testenv.Pool(t, dbURL)
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
