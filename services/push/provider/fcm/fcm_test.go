package fcm_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evict-dev/evict/internal/pushtest"
	"github.com/evict-dev/evict/services/push/provider"
	"github.com/evict-dev/evict/services/push/provider/fcm"
)

const (
	project  = pushtest.FCMProject
	regToken = "dGVzdC1yZWdpc3RyYXRpb24tdG9rZW4:APA91bH-example"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

type answer = pushtest.Answer

type bundle struct {
	client *fcm.Client
	fake   *pushtest.FCM
	clock  *clock
}

func setup(tb testing.TB) *bundle {
	tb.Helper()
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	fake := pushtest.NewFCM(tb, clk.Now)
	file := filepath.Join(tb.TempDir(), "service-account.json")
	if err := os.WriteFile(file, fake.CredentialsJSON(), 0o600); err != nil {
		tb.Fatal(err)
	}
	c, err := fcm.New(fcm.Config{
		CredentialsFile: file,
		BaseURL:         fake.Server.URL,
		HTTPClient:      fake.Client,
		Now:             clk.Now,
		Logger:          slog.New(slog.NewTextHandler(tb.Output(), nil)),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return &bundle{client: c, fake: fake, clock: clk}
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
			_, sends := b.fake.Stats()
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
		{"unregistered", []answer{{Status: 404, Body: pushtest.FCMError(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")}},
			404, "UNREGISTERED", provider.KindTokenInvalid, 0, 1, 1},
		{"not found without detail", []answer{{Status: 404, Body: pushtest.FCMError(404, "NOT_FOUND", "Requested entity was not found.", "")}},
			404, "NOT_FOUND", provider.KindTokenInvalid, 0, 1, 1},
		{"invalid token", []answer{{Status: 400, Body: pushtest.FCMError(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token", "INVALID_ARGUMENT")}},
			400, "INVALID_ARGUMENT", provider.KindTokenInvalid, 0, 1, 1},
		{"token field violation", []answer{{Status: 400, Body: pushtest.FCMError(400, "INVALID_ARGUMENT", "Request contains an invalid argument.", "INVALID_ARGUMENT", tokenViolation)}},
			400, "INVALID_ARGUMENT", provider.KindTokenInvalid, 0, 1, 1},
		{"invalid ttl", []answer{{Status: 400, Body: pushtest.FCMError(400, "INVALID_ARGUMENT", "Invalid value at 'message.android.ttl'", "INVALID_ARGUMENT")}},
			400, "INVALID_ARGUMENT", provider.KindPermanent, 0, 1, 1},
		{"sender id mismatch", []answer{{Status: 403, Body: pushtest.FCMError(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")}},
			403, "SENDER_ID_MISMATCH", provider.KindPermanent, 0, 1, 1},
		{"permission denied", []answer{{Status: 403, Body: pushtest.FCMError(403, "PERMISSION_DENIED", "Permission 'cloudmessaging.messages.create' denied", "")}},
			403, "PERMISSION_DENIED", provider.KindAuth, 0, 1, 1},
		{"quota exceeded", []answer{{Status: 429, RetryAfter: "60", Body: pushtest.FCMError(429, "RESOURCE_EXHAUSTED", "Quota exceeded", "QUOTA_EXCEEDED")}},
			429, "QUOTA_EXCEEDED", provider.KindRetryable, time.Minute, 1, 1},
		{"unavailable", []answer{{Status: 503, RetryAfter: "5", Body: pushtest.FCMError(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE")}},
			503, "UNAVAILABLE", provider.KindRetryable, 5 * time.Second, 1, 1},
		{"internal", []answer{{Status: 500, Body: pushtest.FCMError(500, "INTERNAL", "Internal error encountered.", "INTERNAL")}},
			500, "INTERNAL", provider.KindRetryable, 0, 1, 1},
		{"proxy page", []answer{{Status: 502, Body: "<html>Bad Gateway</html>"}},
			502, "Bad Gateway", provider.KindRetryable, 0, 1, 1},
		{"unauthenticated twice", []answer{{Status: 401, Body: pushtest.FCMError(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", "THIRD_PARTY_AUTH_ERROR")}},
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
			b.fake.Reply("", tt.script...)
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
			fetches, sends := b.fake.Stats()
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
	b.fake.Reply("", answer{Status: 401, Body: pushtest.FCMError(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", "")}, answer{})
	if _, err := b.client.Send(t.Context(), logout()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if _, err := b.client.Send(t.Context(), logout()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	fetches, sends := b.fake.Stats()
	if fetches != 2 || len(sends) != 3 {
		t.Fatalf("%d fetches and %d sends, want 2 and 3", fetches, len(sends))
	}
	if sends[0].AccessToken == sends[1].AccessToken || sends[1].AccessToken != sends[2].AccessToken {
		t.Errorf("access tokens %s, %s, %s: want the retry and the next send on a new token", sends[0].AccessToken, sends[1].AccessToken, sends[2].AccessToken)
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
		if fetches, _ := b.fake.Stats(); fetches != s.wantFetches {
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
	if fetches, sends := b.fake.Stats(); fetches != 1 || len(sends) != 64 {
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
			b.fake.ReplyToken(&tt.answer)
			_, err := b.client.Send(t.Context(), logout())
			var e *provider.Error
			if !errors.As(err, &e) || e.Kind != tt.wantKind || e.Reason != tt.wantReason || e.RetryAfter != tt.wantRetry {
				t.Errorf("Send: %v (%+v), want %s %q retry after %s", err, e, tt.wantKind, tt.wantReason, tt.wantRetry)
			}
			if _, sends := b.fake.Stats(); len(sends) != 0 {
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
	good := pushtest.FCMCredentials(t, "https://oauth2.googleapis.com/token")
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
