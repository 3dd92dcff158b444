package pushtest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evict-dev/evict/services/push/provider/webhook"
)

// WebhookSecret is the Standard Webhooks specification's test secret.
const WebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// Gateway is an in-house push gateway receiving evict's signed webhooks. It
// verifies each request with webhook.Verify and, so that a mistake shared by
// signer and verifier cannot pass, with an HMAC of its own; a request that
// fails either, or is not a JSON POST, fails the test and gets 401. It
// records the authentic requests and answers from the script, keyed by the
// event's device token.
type Gateway struct {
	// Server is the gateway; Client trusts it.
	Server *httptest.Server
	Client *http.Client

	t      testing.TB
	secret string
	now    func() time.Time

	mu     sync.Mutex
	script script
	reqs   []Webhook
}

// Webhook is a request the gateway accepted as authentic.
type Webhook struct {
	At     time.Time // by the gateway's clock
	Header http.Header
	Body   []byte
	Event  webhook.Event
}

// NewGateway starts a gateway that shares secret with evict, until the test
// ends; now is its clock for the timestamp check.
func NewGateway(tb testing.TB, secret string, now func() time.Time) *Gateway {
	tb.Helper()
	g := &Gateway{t: tb, secret: secret, now: now, script: script{}}
	g.Server, g.Client = Start(tb, g)
	return g
}

// Reply sets the answers to pushes for device token ("" for every token
// without answers of its own).
func (g *Gateway) Reply(token string, answers ...Answer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.script[token] = answers
}

// Requests returns the authentic requests received, in order.
func (g *Gateway) Requests() []Webhook {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]Webhook(nil), g.reqs...)
}

func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		g.t.Errorf("gateway: read body: %v", err)
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		g.t.Errorf("gateway: %s with Content-Type %q", r.Method, r.Header.Get("Content-Type"))
	}
	if err := webhook.Verify(g.secret, r.Header, body, g.now(), 0); err != nil {
		g.t.Errorf("gateway: Verify: %v", err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(g.secret, "whsec_"))
	m := hmac.New(sha256.New, key)
	m.Write([]byte(r.Header.Get("webhook-id") + "." + r.Header.Get("webhook-timestamp") + "." + string(body)))
	if want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil)); r.Header.Get("webhook-signature") != want {
		g.t.Errorf("gateway: webhook-signature %q, want %q", r.Header.Get("webhook-signature"), want)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var ev webhook.Event
	if err := json.Unmarshal(body, &ev); err != nil {
		g.t.Errorf("gateway: body: %v", err)
	}
	g.mu.Lock()
	g.reqs = append(g.reqs, Webhook{At: g.now(), Header: r.Header.Clone(), Body: body, Event: ev})
	a := g.script.next(ev.Data.Token)
	g.mu.Unlock()
	if a.RetryAfter != "" {
		w.Header().Set("Retry-After", a.RetryAfter)
	}
	if a.Status == 0 {
		a.Status = http.StatusNoContent
	}
	w.WriteHeader(a.Status)
	_, _ = io.WriteString(w, a.Body)
}
