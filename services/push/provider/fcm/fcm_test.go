package fcm_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evict-dev/evict/services/push/provider"
	"github.com/evict-dev/evict/services/push/provider/fcm"
	"github.com/evict-dev/evict/services/push/provider/internal/h2test"
)

const (
	project     = "evict-test"
	clientEmail = "push@evict-test.iam.gserviceaccount.com"
	keyID       = "0123456789abcdef0123456789abcdef01234567"
	tokenPath   = "/custom/oauth2/token" // not Google's, to show token_uri is honoured
	regToken    = "dGVzdC1yZWdpc3RyYXRpb24tdG9rZW4:APA91bH-example"
)

// rsaKey is shared by the tests: generating a 2048-bit key per test would
// dominate their run time and test nothing more.
var rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// answer is what the fake answers to a send; the zero answer is 200.
type answer struct {
	Status     int
	Body       string
	RetryAfter string
}

// fakeGoogle is a token endpoint and an FCM send endpoint that check what
// oauth2.googleapis.com and fcm.googleapis.com check.
type fakeGoogle struct {
	t        testing.TB
	pub      *rsa.PublicKey
	clock    *clock
	tokenURI string

	mu          sync.Mutex
	tokenAnswer *answer              // replaces the token endpoint's answer when set
	issued      map[string]time.Time // access token → expiry
	fetches     int
	script      []answer
	sends       []send
}

// send is a request the send endpoint accepted for answering.
type send struct {
	Path    string
	Token   string
	Message message
}

// message mirrors the v1 Message fields the client may use; unknown fields
// are refused, as FCM does.
type message struct {
	Token   string            `json:"token"`
	Data    map[string]string `json:"data"`
	Android struct {
		Priority    string `json:"priority"`
		CollapseKey string `json:"collapse_key"`
		TTL         string `json:"ttl"`
	} `json:"android"`
	APNS struct {
		Headers map[string]string `json:"headers"`
		Payload map[string]any    `json:"payload"`
	} `json:"apns"`
}

func (f *fakeGoogle) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == tokenPath {
		f.serveToken(w, r)
		return
	}
	f.serveSend(w, r)
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":%q,"error_description":%q}`, code, desc)
}

func (f *fakeGoogle) serveToken(w http.ResponseWriter, r *http.Request) {
	t := f.t
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Errorf("token: %s with Content-Type %q, want a form POST", r.Method, r.Header.Get("Content-Type"))
		oauthError(w, 400, "invalid_request", "bad request")
		return
	}
	if err := r.ParseForm(); err != nil {
		t.Errorf("token: form: %v", err)
	}
	if gt := r.PostForm.Get("grant_type"); gt != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		t.Errorf("token: grant_type %q", gt)
		oauthError(w, 400, "unsupported_grant_type", "Invalid grant_type: "+gt)
		return
	}
	claims, err := f.verifyAssertion(r.PostForm.Get("assertion"))
	if err != nil {
		t.Errorf("token: assertion: %v", err)
		oauthError(w, 400, "invalid_grant", "Invalid JWT Signature.")
		return
	}
	iat, exp := int64(claims["iat"].(float64)), int64(claims["exp"].(float64))
	if now := f.clock.Now().Unix(); iat > now+60 || iat < now-60 {
		oauthError(w, 400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.")
		t.Errorf("token: iat %d, clock %d", iat, now)
		return
	}
	if exp-iat != 3600 {
		t.Errorf("token: exp - iat = %d, want 3600", exp-iat)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetches++
	if a := f.tokenAnswer; a != nil {
		if a.RetryAfter != "" {
			w.Header().Set("Retry-After", a.RetryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.Status)
		fmt.Fprint(w, a.Body)
		return
	}
	tok := "ya29.test-" + strconv.Itoa(f.fetches)
	f.issued[tok] = f.clock.Now().Add(3599 * time.Second)
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":%q,"expires_in":3599,"token_type":"Bearer"}`, tok)
}

// verifyAssertion checks an RS256 JWT the way Google's token endpoint does
// and returns its claims.
func (f *fakeGoogle) verifyAssertion(jwt string) (map[string]any, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%d parts, want 3", len(parts))
	}
	var header, claims map[string]any
	if err := decodeSegment(parts[0], &header); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if want := map[string]any{"alg": "RS256", "typ": "JWT", "kid": keyID}; !reflect.DeepEqual(header, want) {
		return nil, fmt.Errorf("header %v, want %v", header, want)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(f.pub, crypto.SHA256, sum[:], sig); err != nil {
		return nil, fmt.Errorf("RS256 signature: %w", err)
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	want := map[string]any{
		"iss":   clientEmail,
		"scope": "https://www.googleapis.com/auth/firebase.messaging",
		"aud":   f.tokenURI,
	}
	for k, v := range want {
		if claims[k] != v {
			return nil, fmt.Errorf("claim %s = %v, want %v", k, claims[k], v)
		}
	}
	if _, ok := claims["iat"].(float64); !ok {
		return nil, fmt.Errorf("iat %v", claims["iat"])
	}
	if _, ok := claims["exp"].(float64); !ok {
		return nil, fmt.Errorf("exp %v", claims["exp"])
	}
	if len(claims) != 5 {
		return nil, fmt.Errorf("claims %v, want iss, scope, aud, iat, exp", claims)
	}
	return claims, nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func fcmError(w http.ResponseWriter, status int, grpcStatus, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"code":%d,"message":%q,"status":%q}}`, status, msg, grpcStatus)
}

var sendPath = regexp.MustCompile(`^/v1/projects/([a-z][a-z0-9-]{4,28}[a-z0-9])/messages:send$`)
var ttlFormat = regexp.MustCompile(`^[0-9]+(\.[0-9]{1,9})?s$`)

func (f *fakeGoogle) serveSend(w http.ResponseWriter, r *http.Request) {
	t := f.t
	if r.Method != http.MethodPost || !sendPath.MatchString(r.URL.Path) {
		t.Errorf("send: %s %s", r.Method, r.URL.Path)
		fcmError(w, 404, "NOT_FOUND", "no such method")
		return
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	exp, issued := f.issued[tok]
	f.mu.Unlock()
	if !ok || !issued || !f.clock.Now().Before(exp) {
		fcmError(w, 401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("send: Content-Type %q", ct)
	}
	var body struct {
		Message message `json:"message"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Errorf("send: body: %v", err)
		fcmError(w, 400, "INVALID_ARGUMENT", "Invalid JSON payload received. "+err.Error())
		return
	}
	m := body.Message
	switch {
	case m.Token == "":
		t.Errorf("send: no token")
	case m.Android.Priority != "HIGH" && m.Android.Priority != "NORMAL":
		t.Errorf("send: android.priority %q", m.Android.Priority)
	case m.Android.TTL != "" && !ttlFormat.MatchString(m.Android.TTL):
		t.Errorf("send: android.ttl %q", m.Android.TTL)
	}

	f.mu.Lock()
	f.sends = append(f.sends, send{Path: r.URL.Path, Token: tok, Message: m})
	a := answer{}
	if len(f.script) > 0 {
		a = f.script[0]
		if len(f.script) > 1 {
			f.script = f.script[1:]
		}
	}
	f.mu.Unlock()
	if a.Status == 0 || a.Status == 200 {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"name":"projects/%s/messages/0:1700000000000000%%abc"}`, sendPath.FindStringSubmatch(r.URL.Path)[1])
		return
	}
	if a.RetryAfter != "" {
		w.Header().Set("Retry-After", a.RetryAfter)
	}
	w.WriteHeader(a.Status)
	fmt.Fprint(w, a.Body)
}

func (f *fakeGoogle) answer(script ...answer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script = script
}

func (f *fakeGoogle) answerToken(a *answer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokenAnswer = a
}

func (f *fakeGoogle) stats() (fetches int, sends []send) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fetches, append([]send(nil), f.sends...)
}

type bundle struct {
	client    *fcm.Client
	fake      *fakeGoogle
	srv       *httptest.Server
	http      *http.Client
	clock     *clock
	credsJSON []byte
}

func credentialsJSON(tb testing.TB, tokenURI string) []byte {
	tb.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(rsaKey())
	if err != nil {
		tb.Fatal(err)
	}
	b, err := json.Marshal(map[string]string{
		"type":                        "service_account",
		"project_id":                  project,
		"private_key_id":              keyID,
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":                clientEmail,
		"client_id":                   "123456789012345678901",
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   tokenURI,
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
		"universe_domain":             "googleapis.com",
	})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func setup(tb testing.TB) *bundle {
	tb.Helper()
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	fake := &fakeGoogle{t: tb, pub: &rsaKey().PublicKey, clock: clk, issued: map[string]time.Time{}}
	srv, hc := h2test.Start(tb, fake)
	fake.tokenURI = srv.URL + tokenPath
	creds := credentialsJSON(tb, fake.tokenURI)
	file := filepath.Join(tb.TempDir(), "service-account.json")
	if err := os.WriteFile(file, creds, 0o600); err != nil {
		tb.Fatal(err)
	}
	c, err := fcm.New(fcm.Config{
		CredentialsFile: file,
		BaseURL:         srv.URL,
		HTTPClient:      hc,
		Now:             clk.Now,
		Logger:          slog.New(slog.NewTextHandler(tb.Output(), nil)),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return &bundle{client: c, fake: fake, srv: srv, http: hc, clock: clk, credsJSON: creds}
}

func logout() provider.Push {
	return provider.Push{
		Token:       regToken,
		Tenant:      "acme",
		User:        "u-42",
		Session:     "s-7",
		OperationID: "op-1",
		EventID:     "ev-1",
	}
}

func TestSendMessage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		push        func(p *provider.Push, now time.Time)
		wantPath    string
		wantData    map[string]string
		wantAndroid string // priority/collapse_key/ttl
		wantHeaders map[string]string
		wantAPS     map[string]any
	}{
		{
			name:     "background",
			push:     func(*provider.Push, time.Time) {},
			wantPath: "/v1/projects/" + project + "/messages:send",
			wantData: map[string]string{"type": "logout", "tenant": "acme", "user": "u-42", "session": "s-7",
				"operation_id": "op-1", "event_id": "ev-1"},
			wantAndroid: "HIGH//0s",
			wantHeaders: map[string]string{"apns-push-type": "background", "apns-priority": "5", "apns-expiration": "0"},
			wantAPS:     map[string]any{"content-available": 1.0},
		},
		{
			name: "alert, collapse key, expiration, project",
			push: func(p *provider.Push, now time.Time) {
				p.Project = "other-project"
				p.Session = ""
				p.CollapseID = "logout-u-42"
				p.Expiration = now.Add(90*time.Minute + 500*time.Millisecond)
				p.Alert = &provider.Alert{Title: "Signed out", Body: "Sign in again."}
			},
			wantPath: "/v1/projects/other-project/messages:send",
			wantData: map[string]string{"type": "logout", "tenant": "acme", "user": "u-42",
				"operation_id": "op-1", "event_id": "ev-1", "alert_title": "Signed out", "alert_body": "Sign in again."},
			wantAndroid: "HIGH/logout-u-42/5401s",
			wantHeaders: map[string]string{"apns-push-type": "alert", "apns-priority": "10", "apns-collapse-id": "logout-u-42",
				"apns-expiration": "1772371800"},
			wantAPS: map[string]any{"content-available": 1.0, "alert": map[string]any{"title": "Signed out", "body": "Sign in again."}},
		},
		{
			name:        "expiration beyond four weeks",
			push:        func(p *provider.Push, now time.Time) { p.Expiration = now.Add(60 * 24 * time.Hour) },
			wantPath:    "/v1/projects/" + project + "/messages:send",
			wantAndroid: "HIGH//2419200s",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			p := logout()
			tt.push(&p, b.clock.Now())
			res, err := b.client.Send(t.Context(), p)
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			_, sends := b.fake.stats()
			if len(sends) != 1 {
				t.Fatalf("%d sends, want 1", len(sends))
			}
			s := sends[0]
			if s.Path != tt.wantPath {
				t.Errorf("path %q, want %q", s.Path, tt.wantPath)
			}
			if wantName := strings.TrimSuffix(strings.TrimPrefix(tt.wantPath, "/v1/"), ":send") + "/0:1700000000000000%abc"; res.Status != 200 || res.ProviderID != wantName {
				t.Errorf("Result %+v, want 200 and %s", res, wantName)
			}
			m := s.Message
			if m.Token != regToken {
				t.Errorf("token %q", m.Token)
			}
			if tt.wantData != nil && !reflect.DeepEqual(m.Data, tt.wantData) {
				t.Errorf("data %v, want %v", m.Data, tt.wantData)
			}
			if got := m.Android.Priority + "/" + m.Android.CollapseKey + "/" + m.Android.TTL; got != tt.wantAndroid {
				t.Errorf("android %s, want %s", got, tt.wantAndroid)
			}
			if tt.wantHeaders != nil && !reflect.DeepEqual(m.APNS.Headers, tt.wantHeaders) {
				t.Errorf("apns headers %v, want %v", m.APNS.Headers, tt.wantHeaders)
			}
			if tt.wantAPS != nil && !reflect.DeepEqual(m.APNS.Payload, map[string]any{"aps": tt.wantAPS}) {
				t.Errorf("apns payload %v, want aps %v", m.APNS.Payload, tt.wantAPS)
			}
		})
	}
}

func fcmErrorBody(code int, status, msg, errorCode string, extra ...string) string {
	details := []string{}
	if errorCode != "" {
		details = append(details, fmt.Sprintf(`{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":%q}`, errorCode))
	}
	details = append(details, extra...)
	return fmt.Sprintf(`{"error":{"code":%d,"message":%q,"status":%q,"details":[%s]}}`, code, msg, status, strings.Join(details, ","))
}

func TestSendErrors(t *testing.T) {
	t.Parallel()
	tokenViolation := `{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.token","description":"Invalid registration token"}]}`
	tests := []struct {
		name           string
		script         []answer
		wantStatus     int
		wantReason     string
		wantKind       provider.Kind
		wantRetryAfter time.Duration
		wantSends      int
		wantFetches    int
	}{
		{"unregistered", []answer{{Status: 404, Body: fcmErrorBody(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")}},
			404, "UNREGISTERED", provider.KindTokenInvalid, 0, 1, 1},
		{"not found without detail", []answer{{Status: 404, Body: fcmErrorBody(404, "NOT_FOUND", "Requested entity was not found.", "")}},
			404, "NOT_FOUND", provider.KindTokenInvalid, 0, 1, 1},
		{"invalid token", []answer{{Status: 400, Body: fcmErrorBody(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token", "INVALID_ARGUMENT")}},
			400, "INVALID_ARGUMENT", provider.KindTokenInvalid, 0, 1, 1},
		{"token field violation", []answer{{Status: 400, Body: fcmErrorBody(400, "INVALID_ARGUMENT", "Request contains an invalid argument.", "INVALID_ARGUMENT", tokenViolation)}},
			400, "INVALID_ARGUMENT", provider.KindTokenInvalid, 0, 1, 1},
		{"invalid ttl", []answer{{Status: 400, Body: fcmErrorBody(400, "INVALID_ARGUMENT", "Invalid value at 'message.android.ttl'", "INVALID_ARGUMENT")}},
			400, "INVALID_ARGUMENT", provider.KindPermanent, 0, 1, 1},
		{"sender id mismatch", []answer{{Status: 403, Body: fcmErrorBody(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")}},
			403, "SENDER_ID_MISMATCH", provider.KindPermanent, 0, 1, 1},
		{"permission denied", []answer{{Status: 403, Body: fcmErrorBody(403, "PERMISSION_DENIED", "Permission 'cloudmessaging.messages.create' denied", "")}},
			403, "PERMISSION_DENIED", provider.KindAuth, 0, 1, 1},
		{"quota exceeded", []answer{{Status: 429, RetryAfter: "60", Body: fcmErrorBody(429, "RESOURCE_EXHAUSTED", "Quota exceeded", "QUOTA_EXCEEDED")}},
			429, "QUOTA_EXCEEDED", provider.KindRetryable, time.Minute, 1, 1},
		{"unavailable", []answer{{Status: 503, RetryAfter: "5", Body: fcmErrorBody(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE")}},
			503, "UNAVAILABLE", provider.KindRetryable, 5 * time.Second, 1, 1},
		{"internal", []answer{{Status: 500, Body: fcmErrorBody(500, "INTERNAL", "Internal error encountered.", "INTERNAL")}},
			500, "INTERNAL", provider.KindRetryable, 0, 1, 1},
		{"proxy page", []answer{{Status: 502, Body: "<html>Bad Gateway</html>"}},
			502, "Bad Gateway", provider.KindRetryable, 0, 1, 1},
		{"unauthenticated twice", []answer{{Status: 401, Body: fcmErrorBody(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", "THIRD_PARTY_AUTH_ERROR")}},
			401, "THIRD_PARTY_AUTH_ERROR", provider.KindAuth, 0, 2, 2},
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
			if e.Provider != "fcm" || e.Status != tt.wantStatus || e.Reason != tt.wantReason || e.Kind != tt.wantKind || e.RetryAfter != tt.wantRetryAfter {
				t.Errorf("error %+v, want status %d reason %s kind %s retry after %s", e, tt.wantStatus, tt.wantReason, tt.wantKind, tt.wantRetryAfter)
			}
			for kind, sentinel := range sentinels {
				if got := errors.Is(err, sentinel); got != (kind == tt.wantKind) {
					t.Errorf("errors.Is(err, %v) = %v", sentinel, got)
				}
			}
			if res.Status != tt.wantStatus || res.RetryAfter != tt.wantRetryAfter {
				t.Errorf("Result %+v", res)
			}
			fetches, sends := b.fake.stats()
			if len(sends) != tt.wantSends || fetches != tt.wantFetches {
				t.Errorf("%d sends and %d token fetches, want %d and %d", len(sends), fetches, tt.wantSends, tt.wantFetches)
			}
		})
	}
}

// A 401 gets a new access token and one more try.
func TestUnauthorizedRefreshesToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fake.answer(answer{Status: 401, Body: fcmErrorBody(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", "")}, answer{})
	if _, err := b.client.Send(t.Context(), logout()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if _, err := b.client.Send(t.Context(), logout()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	fetches, sends := b.fake.stats()
	if fetches != 2 || len(sends) != 3 {
		t.Fatalf("%d fetches and %d sends, want 2 and 3", fetches, len(sends))
	}
	if sends[0].Token == sends[1].Token || sends[1].Token != sends[2].Token {
		t.Errorf("access tokens %s, %s, %s: want the retry and the next send on a new token", sends[0].Token, sends[1].Token, sends[2].Token)
	}
}

// One access token serves every send until a minute before it expires.
func TestAccessTokenCaching(t *testing.T) {
	t.Parallel()
	b := setup(t)
	steps := []struct {
		advance     time.Duration
		wantFetches int
	}{
		{0, 1},
		{0, 1},
		{30 * time.Minute, 1},
		{28*time.Minute + 58*time.Second, 1}, // 58:58 of a 59:59 token
		{time.Second, 2},                     // 58:59: a minute before expiry
		{58 * time.Minute, 2},
		{time.Hour, 3},
	}
	for i, s := range steps {
		b.clock.Advance(s.advance)
		if _, err := b.client.Send(t.Context(), logout()); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if fetches, _ := b.fake.stats(); fetches != s.wantFetches {
			t.Errorf("step %d: %d token fetches, want %d", i, fetches, s.wantFetches)
		}
	}
}

// Concurrent sends wait for one token fetch (run with -race).
func TestConcurrentSendsFetchOneToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			if _, err := b.client.Send(t.Context(), logout()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if fetches, sends := b.fake.stats(); fetches != 1 || len(sends) != 64 {
		t.Errorf("%d token fetches and %d sends, want 1 and 64", fetches, len(sends))
	}
}

func TestTokenEndpointErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		answer     answer
		wantKind   provider.Kind
		wantReason string
		wantRetry  time.Duration
	}{
		{"invalid grant", answer{Status: 400, Body: `{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`}, provider.KindAuth, "token: invalid_grant", 0},
		{"unauthorized client", answer{Status: 401, Body: `{"error":"unauthorized_client"}`}, provider.KindAuth, "token: unauthorized_client", 0},
		{"unavailable", answer{Status: 503, RetryAfter: "7", Body: `{}`}, provider.KindRetryable, "token: Service Unavailable", 7 * time.Second},
		{"not a token", answer{Status: 200, Body: `{"token_type":"Bearer"}`}, provider.KindRetryable, "token: malformed answer", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.fake.answerToken(&tt.answer)
			_, err := b.client.Send(t.Context(), logout())
			var e *provider.Error
			if !errors.As(err, &e) || e.Kind != tt.wantKind || e.Reason != tt.wantReason || e.RetryAfter != tt.wantRetry {
				t.Errorf("Send: %v (%+v), want %s %q retry after %s", err, e, tt.wantKind, tt.wantReason, tt.wantRetry)
			}
			if _, sends := b.fake.stats(); len(sends) != 0 {
				t.Errorf("%d sends without an access token", len(sends))
			}
		})
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

func TestNewRejectsBadCredentials(t *testing.T) {
	t.Parallel()
	good := credentialsJSON(t, "https://oauth2.googleapis.com/token")
	edit := func(f func(m map[string]string)) []byte {
		var m map[string]string
		if err := json.Unmarshal(good, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	file := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(file, good, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     fcm.Config
		wantErr bool
	}{
		{"JSON", fcm.Config{CredentialsJSON: good}, false},
		{"file", fcm.Config{CredentialsFile: file}, false},
		{"no token_uri uses Google's", fcm.Config{CredentialsJSON: edit(func(m map[string]string) { delete(m, "token_uri") })}, false},
		{"none", fcm.Config{}, true},
		{"both", fcm.Config{CredentialsFile: file, CredentialsJSON: good}, true},
		{"missing file", fcm.Config{CredentialsFile: file + ".missing"}, true},
		{"not JSON", fcm.Config{CredentialsJSON: []byte("{")}, true},
		{"user credentials", fcm.Config{CredentialsJSON: edit(func(m map[string]string) { m["type"] = "authorized_user" })}, true},
		{"no client_email", fcm.Config{CredentialsJSON: edit(func(m map[string]string) { delete(m, "client_email") })}, true},
		{"bad private_key", fcm.Config{CredentialsJSON: edit(func(m map[string]string) {
			m["private_key"] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
		})}, true},
		{"relative token_uri", fcm.Config{CredentialsJSON: edit(func(m map[string]string) { m["token_uri"] = "/token" })}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := fcm.New(tt.cfg)
			if (err != nil) != tt.wantErr {
				t.Errorf("New: %v, want error = %v", err, tt.wantErr)
			}
		})
	}
}
