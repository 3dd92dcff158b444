package apns_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/evict-dev/evict/internal/pushtest"
	"github.com/evict-dev/evict/services/push/provider"
	"github.com/evict-dev/evict/services/push/provider/apns"
)

const (
	keyID  = "ABC123DEFG"
	teamID = "DEF123GHIJ"
	topic  = "com.example.app"
	token  = "8f3c1a6f0d2e4b5a9c7e1f3d5b7a9c0e2f4d6b8a0c1e3f5d7b9a1c3e5f7d9b0a"
)

// clock is a settable clock for Config.Now and the fake server.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// request is what the fake APNs received, after its checks.
type request struct {
	Path    string
	Header  http.Header
	JWT     string
	Claims  map[string]any
	Payload map[string]any
}

// answer is what the fake APNs replies; the zero answer is 200.
type answer struct {
	Status     int
	Reason     string
	RetryAfter string
}

// fakeAPNs checks each request the way api.push.apple.com does and answers
// with the script, one answer per request (the last one repeats).
type fakeAPNs struct {
	t     testing.TB
	pub   *ecdsa.PublicKey
	clock *clock

	mu       sync.Mutex
	script   []answer
	reqs     []request
	verified map[string]map[string]any // provider token → claims; APNs too validates a token once, not per push
	discard  bool                      // do not record requests (benchmarks)
}

func (f *fakeAPNs) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := f.t
	reject := func(status int, reason string, format string, args ...any) {
		t.Errorf("fake APNs: "+format, args...)
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"reason":%q}`, reason)
	}
	if r.Method != http.MethodPost {
		reject(405, "MethodNotAllowed", "method %s, want POST", r.Method)
		return
	}
	tok, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if !ok || tok == "" || strings.Contains(tok, "/") {
		reject(404, "BadPath", "path %q, want /3/device/<token>", r.URL.Path)
		return
	}
	jwt, ok := strings.CutPrefix(r.Header.Get("authorization"), "bearer ")
	if !ok {
		reject(403, "MissingProviderToken", "authorization %q, want bearer <jwt>", r.Header.Get("authorization"))
		return
	}
	f.mu.Lock()
	claims, ok := f.verified[jwt]
	f.mu.Unlock()
	if !ok {
		var err error
		if claims, err = verifyES256(jwt, f.pub); err != nil {
			reject(403, "InvalidProviderToken", "provider token: %v", err)
			return
		}
		f.mu.Lock()
		f.verified[jwt] = claims
		f.mu.Unlock()
	}
	if claims["iss"] != teamID {
		reject(403, "InvalidProviderToken", "iss %v, want %s", claims["iss"], teamID)
		return
	}
	iat, ok := claims["iat"].(float64)
	if !ok {
		reject(403, "InvalidProviderToken", "iat %v is not a number", claims["iat"])
		return
	}
	if age := f.clock.Now().Sub(time.Unix(int64(iat), 0)); age < 0 || age >= time.Hour {
		// The real service refuses tokens older than an hour.
		w.WriteHeader(403)
		fmt.Fprint(w, `{"reason":"ExpiredProviderToken"}`)
		return
	}
	if got := len(claims); got != 2 {
		t.Errorf("fake APNs: claims %v, want exactly iss and iat", claims)
	}
	h := r.Header
	if h.Get("apns-topic") == "" {
		reject(400, "MissingTopic", "no apns-topic")
		return
	}
	if _, err := uuid.Parse(h.Get("apns-id")); err != nil || len(h.Get("apns-id")) != 36 {
		reject(400, "BadMessageId", "apns-id %q is not a canonical UUID", h.Get("apns-id"))
		return
	}
	switch pt, prio := h.Get("apns-push-type"), h.Get("apns-priority"); {
	case pt == "background" && prio == "5", pt == "alert" && (prio == "10" || prio == "5"):
	default:
		reject(400, "BadPriority", "apns-push-type %q with apns-priority %q", pt, prio)
		return
	}
	if _, err := strconv.ParseInt(h.Get("apns-expiration"), 10, 64); err != nil {
		reject(400, "BadExpirationDate", "apns-expiration %q", h.Get("apns-expiration"))
		return
	}
	if len(h.Get("apns-collapse-id")) > 64 {
		reject(400, "BadCollapseId", "apns-collapse-id longer than 64 bytes")
		return
	}
	var payload map[string]any
	if err := json.NewDecoder(r.Body).Decode(&payload); err != nil {
		reject(400, "PayloadEmpty", "payload: %v", err)
		return
	}
	aps, _ := payload["aps"].(map[string]any)
	if h.Get("apns-push-type") == "background" && (aps["content-available"] != 1.0 || aps["alert"] != nil) {
		reject(400, "BadPayload", "background push with aps %v", aps)
		return
	}

	f.mu.Lock()
	if !f.discard {
		f.reqs = append(f.reqs, request{Path: r.URL.Path, Header: h.Clone(), JWT: jwt, Claims: claims, Payload: payload})
	}
	a := answer{}
	if len(f.script) > 0 {
		a = f.script[0]
		if len(f.script) > 1 {
			f.script = f.script[1:]
		}
	}
	f.mu.Unlock()

	w.Header().Set("apns-id", h.Get("apns-id"))
	if a.Status == 0 || a.Status == 200 {
		w.WriteHeader(200)
		return
	}
	if a.RetryAfter != "" {
		w.Header().Set("Retry-After", a.RetryAfter)
	}
	w.Header().Set("content-type", "application/json")
	w.WriteHeader(a.Status)
	if a.Status == 410 {
		fmt.Fprintf(w, `{"reason":%q,"timestamp":%d}`, a.Reason, f.clock.Now().UnixMilli())
		return
	}
	fmt.Fprintf(w, `{"reason":%q}`, a.Reason)
}

func (f *fakeAPNs) answer(script ...answer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script = script
}

func (f *fakeAPNs) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.reqs...)
}

// verifyES256 checks a compact JWS the way APNs does: header {alg ES256, kid},
// a 64-byte r||s signature over header.claims, and returns the claims.
func verifyES256(jwt string, pub *ecdsa.PublicKey) (map[string]any, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%d parts, want 3", len(parts))
	}
	var header map[string]any
	if err := pushtest.DecodeJWTSegment(parts[0], &header); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if want := map[string]any{"alg": "ES256", "kid": keyID}; !reflect.DeepEqual(header, want) {
		return nil, fmt.Errorf("header %v, want %v", header, want)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	if len(sig) != 64 {
		return nil, fmt.Errorf("signature is %d bytes, want 64 (r||s, not ASN.1)", len(sig))
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(pub, sum[:], r, s) {
		return nil, errors.New("ES256 signature does not verify")
	}
	var claims map[string]any
	if err := pushtest.DecodeJWTSegment(parts[1], &claims); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	return claims, nil
}

// bundle is what a test works with.
type bundle struct {
	client *apns.Client
	fake   *fakeAPNs
	srv    *httptest.Server
	http   *http.Client
	clock  *clock
	keyPEM []byte
}

func setup(tb testing.TB) *bundle {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	fake := &fakeAPNs{t: tb, pub: &key.PublicKey, clock: clk, verified: map[string]map[string]any{}}
	srv, hc := pushtest.Start(tb, fake)
	c, err := apns.New(apns.Config{
		BaseURL:    srv.URL,
		KeyPEM:     keyPEM,
		KeyID:      keyID,
		TeamID:     teamID,
		Topic:      topic,
		HTTPClient: hc,
		Now:        clk.Now,
		Logger:     slog.New(slog.NewTextHandler(tb.Output(), nil)),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return &bundle{client: c, fake: fake, srv: srv, http: hc, clock: clk, keyPEM: keyPEM}
}

func logout() provider.Push {
	return provider.Push{
		Token:       token,
		Tenant:      "acme",
		User:        "u-42",
		Session:     "s-7",
		OperationID: "op-1",
		EventID:     "ev-1",
	}
}

func TestSendRequest(t *testing.T) {
	t.Parallel()
	exp := time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name        string
		push        func(p *provider.Push)
		wantHeaders map[string]string // "" means absent
		wantAPS     map[string]any
		wantEvict   map[string]any
	}{
		{
			name: "background",
			push: func(*provider.Push) {},
			wantHeaders: map[string]string{
				"apns-push-type":   "background",
				"apns-priority":    "5",
				"apns-topic":       topic,
				"apns-expiration":  "0",
				"apns-collapse-id": "",
				"content-type":     "application/json",
			},
			wantAPS: map[string]any{"content-available": 1.0},
			wantEvict: map[string]any{"type": "logout", "tenant": "acme", "user": "u-42", "session": "s-7",
				"operation_id": "op-1", "event_id": "ev-1"},
		},
		{
			name: "alert with collapse id, expiration and topic",
			push: func(p *provider.Push) {
				p.Alert = &provider.Alert{Title: "Signed out", Body: "An administrator ended your session."}
				p.CollapseID = "logout-u-42"
				p.Expiration = exp
				p.Topic = "com.example.other"
				p.Session = ""
			},
			wantHeaders: map[string]string{
				"apns-push-type":   "alert",
				"apns-priority":    "10",
				"apns-topic":       "com.example.other",
				"apns-expiration":  strconv.FormatInt(exp.Unix(), 10),
				"apns-collapse-id": "logout-u-42",
			},
			wantAPS: map[string]any{"content-available": 1.0,
				"alert": map[string]any{"title": "Signed out", "body": "An administrator ended your session."}},
			wantEvict: map[string]any{"type": "logout", "tenant": "acme", "user": "u-42",
				"operation_id": "op-1", "event_id": "ev-1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			p := logout()
			tt.push(&p)
			res, err := b.client.Send(t.Context(), p)
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			reqs := b.fake.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			req := reqs[0]
			if want := "/3/device/" + token; req.Path != want {
				t.Errorf("path %q, want %q", req.Path, want)
			}
			for k, want := range tt.wantHeaders {
				if got := req.Header.Get(k); got != want {
					t.Errorf("%s: %q, want %q", k, got, want)
				}
			}
			if res.Status != 200 || res.ProviderID != req.Header.Get("apns-id") || res.ProviderID != p.MessageID() {
				t.Errorf("Result %+v, want 200 with apns-id %s", res, p.MessageID())
			}
			if got := req.Payload["aps"]; !reflect.DeepEqual(got, tt.wantAPS) {
				t.Errorf("aps %v, want %v", got, tt.wantAPS)
			}
			if got := req.Payload["evict"]; !reflect.DeepEqual(got, tt.wantEvict) {
				t.Errorf("evict %v, want %v", got, tt.wantEvict)
			}
			if len(req.Payload) != 2 {
				t.Errorf("payload %v has keys other than aps and evict", req.Payload)
			}
			if iat := req.Claims["iat"]; iat != float64(b.clock.Now().Unix()) {
				t.Errorf("iat %v, want %d", iat, b.clock.Now().Unix())
			}
		})
	}
}

func TestSendErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		script         []answer
		wantStatus     int
		wantReason     string
		wantKind       provider.Kind
		wantRetryAfter time.Duration
		wantRequests   int
	}{
		{"unregistered", []answer{{Status: 410, Reason: "Unregistered"}}, 410, "Unregistered", provider.KindTokenInvalid, 0, 1},
		{"bad device token", []answer{{Status: 400, Reason: "BadDeviceToken"}}, 400, "BadDeviceToken", provider.KindTokenInvalid, 0, 1},
		{"token not for topic", []answer{{Status: 400, Reason: "DeviceTokenNotForTopic"}}, 400, "DeviceTokenNotForTopic", provider.KindTokenInvalid, 0, 1},
		{"bad collapse id", []answer{{Status: 400, Reason: "BadCollapseId"}}, 400, "BadCollapseId", provider.KindPermanent, 0, 1},
		{"payload too large", []answer{{Status: 413, Reason: "PayloadTooLarge"}}, 413, "PayloadTooLarge", provider.KindPermanent, 0, 1},
		{"too many requests", []answer{{Status: 429, Reason: "TooManyRequests", RetryAfter: "30"}}, 429, "TooManyRequests", provider.KindRetryable, 30 * time.Second, 1},
		{"service unavailable", []answer{{Status: 503, Reason: "ServiceUnavailable"}}, 503, "ServiceUnavailable", provider.KindRetryable, 0, 1},
		{"shutdown with retry-after date", []answer{{Status: 503, Reason: "Shutdown", RetryAfter: "Sun, 01 Mar 2026 12:02:00 GMT"}}, 503, "Shutdown", provider.KindRetryable, 2 * time.Minute, 1},
		{"internal server error", []answer{{Status: 500, Reason: "InternalServerError"}}, 500, "InternalServerError", provider.KindRetryable, 0, 1},
		{"invalid provider token", []answer{{Status: 403, Reason: "InvalidProviderToken"}}, 403, "InvalidProviderToken", provider.KindAuth, 0, 1},
		{"provider token expired twice", []answer{{Status: 403, Reason: "ExpiredProviderToken"}}, 403, "ExpiredProviderToken", provider.KindAuth, 0, 2},
	}
	sentinels := map[provider.Kind]error{
		provider.KindTokenInvalid: provider.ErrTokenInvalid,
		provider.KindRetryable:    provider.ErrRetryable,
		provider.KindAuth:         provider.ErrAuth,
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.fake.answer(tt.script...)
			res, err := b.client.Send(t.Context(), logout())
			var e *provider.Error
			if !errors.As(err, &e) {
				t.Fatalf("Send: %v, want a *provider.Error", err)
			}
			if e.Provider != "apns" || e.Status != tt.wantStatus || e.Reason != tt.wantReason || e.Kind != tt.wantKind || e.RetryAfter != tt.wantRetryAfter {
				t.Errorf("error %+v, want status %d reason %s kind %s retry after %s", e, tt.wantStatus, tt.wantReason, tt.wantKind, tt.wantRetryAfter)
			}
			for kind, sentinel := range sentinels {
				if got := errors.Is(err, sentinel); got != (kind == tt.wantKind) {
					t.Errorf("errors.Is(err, %v) = %v", sentinel, got)
				}
			}
			if res.Status != tt.wantStatus || res.RetryAfter != tt.wantRetryAfter {
				t.Errorf("Result %+v, want status %d and retry after %s", res, tt.wantStatus, tt.wantRetryAfter)
			}
			if n := len(b.fake.requests()); n != tt.wantRequests {
				t.Errorf("%d requests, want %d", n, tt.wantRequests)
			}
		})
	}
}

// A token Apple calls expired is replaced and the push sent once more.
func TestExpiredProviderTokenIsRefreshed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fake.answer(answer{Status: 403, Reason: "ExpiredProviderToken"}, answer{})
	res, err := b.client.Send(t.Context(), logout())
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if res.Status != 200 {
		t.Errorf("status %d, want 200", res.Status)
	}
	reqs := b.fake.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	if reqs[0].JWT == reqs[1].JWT {
		t.Error("retry used the expired provider token")
	}
	if reqs[0].Header.Get("apns-id") != reqs[1].Header.Get("apns-id") {
		t.Error("retry changed apns-id")
	}
	// The new token is the one kept.
	if _, err := b.client.Send(t.Context(), logout()); err != nil {
		t.Fatal(err)
	}
	if reqs := b.fake.requests(); reqs[2].JWT != reqs[1].JWT {
		t.Error("the refreshed token was not cached")
	}
}

// One provider token serves every send until it is 50 minutes old.
func TestProviderTokenLifetime(t *testing.T) {
	t.Parallel()
	b := setup(t)
	start := b.clock.Now()
	steps := []struct {
		advance time.Duration
		newJWT  bool
	}{
		{0, true},
		{0, false},
		{10 * time.Minute, false},
		{39*time.Minute + 59*time.Second, false}, // 49:59
		{time.Second, true},                      // 50:00
		{49 * time.Minute, false},
		{time.Minute, true},
	}
	var prev string
	iat := start
	for i, s := range steps {
		b.clock.Advance(s.advance)
		if _, err := b.client.Send(t.Context(), logout()); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		reqs := b.fake.requests()
		got := reqs[len(reqs)-1]
		if s.newJWT {
			iat = b.clock.Now()
		}
		if (got.JWT != prev) != s.newJWT {
			t.Errorf("step %d at +%s: new token = %v, want %v", i, b.clock.Now().Sub(start), got.JWT != prev, s.newJWT)
		}
		if got.Claims["iat"] != float64(iat.Unix()) {
			t.Errorf("step %d: iat %v, want %d", i, got.Claims["iat"], iat.Unix())
		}
		prev = got.JWT
	}
}

// Concurrent sends share one provider token (Apple throttles token
// updates) and race on nothing (run with -race).
func TestConcurrentSendsShareOneToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			p := logout()
			p.EventID = "ev-" + strconv.Itoa(i)
			if _, err := b.client.Send(t.Context(), p); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	jwts := map[string]bool{}
	ids := map[string]bool{}
	for _, r := range b.fake.requests() {
		jwts[r.JWT] = true
		ids[r.Header.Get("apns-id")] = true
	}
	if len(jwts) != 1 || len(ids) != 64 {
		t.Errorf("%d provider tokens and %d apns-ids over 64 sends, want 1 and 64", len(jwts), len(ids))
	}
}

func TestSendRefusedLocally(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		topic      string
		push       func(*provider.Push)
		wantReason string
		wantKind   provider.Kind
	}{
		{"no topic", "", func(*provider.Push) {}, "MissingTopic", provider.KindPermanent},
		{"no token", topic, func(p *provider.Push) { p.Token = "" }, "MissingDeviceToken", provider.KindTokenInvalid},
		{"payload over 4 KB", topic, func(p *provider.Push) { p.Alert = &provider.Alert{Body: strings.Repeat("x", 4096)} }, "PayloadTooLarge", provider.KindPermanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			c, err := apns.New(apns.Config{BaseURL: b.srv.URL, KeyPEM: b.keyPEM, KeyID: keyID, TeamID: teamID, Topic: tt.topic, HTTPClient: b.http})
			if err != nil {
				t.Fatal(err)
			}
			p := logout()
			tt.push(&p)
			_, err = c.Send(t.Context(), p)
			var e *provider.Error
			if !errors.As(err, &e) || e.Reason != tt.wantReason || e.Kind != tt.wantKind {
				t.Errorf("Send: %v, want %s (%s)", err, tt.wantReason, tt.wantKind)
			}
			if n := len(b.fake.requests()); n != 0 {
				t.Errorf("%d requests reached APNs, want 0", n)
			}
		})
	}
}

func TestNetworkErrorIsRetryable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.srv.Close()
	_, err := b.client.Send(t.Context(), logout())
	var e *provider.Error
	if !errors.Is(err, provider.ErrRetryable) || !errors.As(err, &e) || e.Reason != "network" || e.Err == nil {
		t.Errorf("Send to a closed server: %v, want a retryable network error", err)
	}
}

func TestCanceledContextIsNotRetryable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := b.client.Send(ctx, logout())
	if !errors.Is(err, context.Canceled) || errors.Is(err, provider.ErrRetryable) {
		t.Errorf("Send with a canceled context: %v, want context.Canceled and not retryable", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	good := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384DER, _ := x509.MarshalPKCS8PrivateKey(p384)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	keyFile := filepath.Join(t.TempDir(), "AuthKey.p8")
	if err := os.WriteFile(keyFile, good, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     apns.Config
		wantErr bool
	}{
		{"key PEM", apns.Config{KeyPEM: good, KeyID: keyID, TeamID: teamID}, false},
		{"key file", apns.Config{KeyFile: keyFile, KeyID: keyID, TeamID: teamID, BaseURL: apns.Sandbox}, false},
		{"no key", apns.Config{KeyID: keyID, TeamID: teamID}, true},
		{"both key file and PEM", apns.Config{KeyFile: keyFile, KeyPEM: good, KeyID: keyID, TeamID: teamID}, true},
		{"missing key file", apns.Config{KeyFile: keyFile + ".missing", KeyID: keyID, TeamID: teamID}, true},
		{"no key id", apns.Config{KeyPEM: good, TeamID: teamID}, true},
		{"no team id", apns.Config{KeyPEM: good, KeyID: keyID}, true},
		{"not PEM", apns.Config{KeyPEM: []byte("not a key"), KeyID: keyID, TeamID: teamID}, true},
		{"P-384 key", apns.Config{KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p384DER}), KeyID: keyID, TeamID: teamID}, true},
		{"RSA key", apns.Config{KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsaDER}), KeyID: keyID, TeamID: teamID}, true},
		{"relative base URL", apns.Config{KeyPEM: good, KeyID: keyID, TeamID: teamID, BaseURL: "api.push.apple.com"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := apns.New(tt.cfg)
			if (err != nil) != tt.wantErr {
				t.Errorf("New: %v, want error = %v", err, tt.wantErr)
			}
		})
	}
}

// The default client verifies the server against the system roots, which
// SSL_CERT_FILE replaces, and speaks HTTP/2. The system roots are loaded
// once per process, so each case runs in a child process.
func TestDefaultClientUsesSystemRoots(t *testing.T) {
	if base := os.Getenv("APNS_TEST_CHILD_URL"); base != "" {
		c, err := apns.New(apns.Config{BaseURL: base, KeyPEM: []byte(os.Getenv("APNS_TEST_CHILD_KEY")), KeyID: keyID, TeamID: teamID, Topic: topic})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Send(t.Context(), logout())
		if os.Getenv("APNS_TEST_CHILD_TRUSTED") == "1" {
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			return
		}
		var verr *tls.CertificateVerificationError
		if !errors.Is(err, provider.ErrRetryable) || !errors.As(err, &verr) {
			t.Fatalf("Send to an untrusted server: %v, want a retryable certificate verification error", err)
		}
		return
	}
	if testing.Short() {
		t.Skip("starts child processes")
	}
	t.Parallel()
	b := setup(t)
	// The fake checks iat against its own clock, frozen, and refuses an iat
	// in its future; the child signs with time.Now, seconds later under
	// load. A minute ahead keeps the child's iat in the fake's past.
	b.clock.Advance(time.Since(b.clock.Now()) + time.Minute)
	tests := []struct {
		name     string
		certFile string
		trusted  bool
	}{
		{"server certificate in SSL_CERT_FILE", pushtest.CertFile(t, b.srv), true},
		{"another certificate in SSL_CERT_FILE", pushtest.UntrustedCertFile(t), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestDefaultClientUsesSystemRoots$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(),
				"SSL_CERT_FILE="+tt.certFile,
				"SSL_CERT_DIR="+t.TempDir(),
				"APNS_TEST_CHILD_URL="+b.srv.URL,
				"APNS_TEST_CHILD_KEY="+string(b.keyPEM),
				"APNS_TEST_CHILD_TRUSTED="+map[bool]string{true: "1", false: "0"}[tt.trusted],
			)
			before := len(b.fake.requests())
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			if got, want := len(b.fake.requests())-before, map[bool]int{true: 1, false: 0}[tt.trusted]; got != want {
				t.Errorf("%d requests reached the server, want %d", got, want)
			}
		})
	}
}
