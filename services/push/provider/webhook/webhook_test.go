package webhook_test

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/evict-dev/evict/internal/pushtest"
	"github.com/evict-dev/evict/services/push/provider"
	"github.com/evict-dev/evict/services/push/provider/webhook"
)

const secret = pushtest.WebhookSecret

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type answer = pushtest.Answer

type bundle struct {
	client *webhook.Client
	gw     *pushtest.Gateway
}

func setup(tb testing.TB) *bundle {
	tb.Helper()
	gw := pushtest.NewGateway(tb, secret, func() time.Time { return now })
	c, err := webhook.New(webhook.Config{URL: gw.Server.URL + "/push", Secret: secret, HTTPClient: gw.Client, Now: func() time.Time { return now }})
	if err != nil {
		tb.Fatal(err)
	}
	return &bundle{client: c, gw: gw}
}

func logout() provider.Push {
	return provider.Push{
		Token:       "gw-device-1",
		Topic:       "com.example.app",
		Tenant:      "acme",
		User:        "u-42",
		Session:     "s-7",
		OperationID: "op-1",
		EventID:     "ev-1",
	}
}

func TestSendSignedEvent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := logout()
	p.Alert = &provider.Alert{Title: "Signed out"}
	p.Expiration = now.Add(time.Hour)
	res, err := b.client.Send(t.Context(), p)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	reqs := b.gw.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if res.Status != 204 || res.ProviderID != r.Header.Get("webhook-id") || res.ProviderID != "msg_"+p.MessageID() {
		t.Errorf("Result %+v, want 204 and webhook-id %s", res, r.Header.Get("webhook-id"))
	}
	if ts := r.Header.Get("webhook-timestamp"); ts != strconv.FormatInt(now.Unix(), 10) {
		t.Errorf("webhook-timestamp %q", ts)
	}
	exp := now.Add(time.Hour)
	want := webhook.Event{Type: "evict.push.logout", Timestamp: now, Data: webhook.EventData{
		Token:      "gw-device-1",
		Topic:      "com.example.app",
		Expiration: &exp,
		Alert:      &provider.Alert{Title: "Signed out"},
		Payload: map[string]string{"type": "logout", "tenant": "acme", "user": "u-42", "session": "s-7",
			"operation_id": "op-1", "event_id": "ev-1"},
	}}
	if !reflect.DeepEqual(r.Event, want) {
		t.Errorf("event\n%+v\nwant\n%+v", r.Event, want)
	}

	// A retry of the same push carries the same webhook-id, so that the
	// gateway can drop it; another device's push does not.
	if _, err := b.client.Send(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	other := p
	other.Token = "gw-device-2"
	if _, err := b.client.Send(t.Context(), other); err != nil {
		t.Fatal(err)
	}
	reqs = b.gw.Requests()
	if reqs[1].Header.Get("webhook-id") != reqs[0].Header.Get("webhook-id") || reqs[2].Header.Get("webhook-id") == reqs[0].Header.Get("webhook-id") {
		t.Errorf("webhook-ids %s, %s, %s: want the retry's equal and the other device's different",
			reqs[0].Header.Get("webhook-id"), reqs[1].Header.Get("webhook-id"), reqs[2].Header.Get("webhook-id"))
	}
}

func TestSendErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		answer         answer
		wantKind       provider.Kind // -1: success
		wantRetryAfter time.Duration
	}{
		{"200", answer{Status: 200}, -1, 0},
		{"202", answer{Status: 202}, -1, 0},
		{"410 gone", answer{Status: 410}, provider.KindTokenInvalid, 0},
		{"503 with retry-after", answer{Status: 503, RetryAfter: "120"}, provider.KindRetryable, 2 * time.Minute},
		{"500", answer{Status: 500}, provider.KindRetryable, 0},
		{"429", answer{Status: 429, RetryAfter: "1"}, provider.KindRetryable, time.Second},
		{"408", answer{Status: 408}, provider.KindRetryable, 0},
		{"401 signature refused", answer{Status: 401}, provider.KindAuth, 0},
		{"400", answer{Status: 400, Body: "unknown device\nmore"}, provider.KindPermanent, 0},
		{"404", answer{Status: 404}, provider.KindPermanent, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.gw.Reply("", tt.answer)
			res, err := b.client.Send(t.Context(), logout())
			if res.Status != tt.answer.Status || res.RetryAfter != tt.wantRetryAfter {
				t.Errorf("Result %+v, want status %d retry after %s", res, tt.answer.Status, tt.wantRetryAfter)
			}
			if tt.wantKind == -1 {
				if err != nil {
					t.Errorf("Send: %v", err)
				}
				return
			}
			var e *provider.Error
			if !errors.As(err, &e) || e.Kind != tt.wantKind || e.Status != tt.answer.Status || e.RetryAfter != tt.wantRetryAfter {
				t.Fatalf("Send: %v, want kind %s", err, tt.wantKind)
			}
			if got := errors.Is(err, provider.ErrTokenInvalid); got != (tt.wantKind == provider.KindTokenInvalid) {
				t.Errorf("errors.Is(err, ErrTokenInvalid) = %v", got)
			}
			if got := errors.Is(err, provider.ErrRetryable); got != (tt.wantKind == provider.KindRetryable) {
				t.Errorf("errors.Is(err, ErrRetryable) = %v", got)
			}
		})
	}
}

func TestNetworkErrorIsRetryable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.gw.Server.Close()
	_, err := b.client.Send(t.Context(), logout())
	if d, ok := provider.RetryAfter(err); !ok || d != 0 {
		t.Errorf("Send to a closed gateway: %v, want retryable without Retry-After", err)
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

func TestVerify(t *testing.T) {
	t.Parallel()
	// The Standard Webhooks specification's published test vector.
	const (
		id   = "msg_p5jXN8AQM9LWM0D4loKWxJek"
		ts   = "1614265330"
		body = `{"test": 2432232314}`
		sig  = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	)
	signedAt := time.Unix(1614265330, 0)
	header := func(id, ts, sig string) http.Header {
		h := http.Header{}
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", ts)
		h.Set("webhook-signature", sig)
		return h
	}
	tests := []struct {
		name    string
		secret  string
		header  http.Header
		body    string
		now     time.Time
		wantErr error
	}{
		{"test vector", secret, header(id, ts, sig), body, signedAt, nil},
		{"4 minutes late", secret, header(id, ts, sig), body, signedAt.Add(4 * time.Minute), nil},
		{"rotated: second signature matches", secret, header(id, ts, "v1,AAAA v1a,xyz "+sig), body, signedAt, nil},
		{"tampered body", secret, header(id, ts, sig), `{"test": 2432232315}`, signedAt, webhook.ErrInvalidSignature},
		{"tampered id", secret, header("msg_other", ts, sig), body, signedAt, webhook.ErrInvalidSignature},
		{"other secret", "whsec_" + base64.StdEncoding.EncodeToString([]byte("another-secret-of-24-byte")), header(id, ts, sig), body, signedAt, webhook.ErrInvalidSignature},
		{"v2 is not v1", secret, header(id, ts, "v2"+sig[2:]), body, signedAt, webhook.ErrInvalidSignature},
		{"no signature", secret, header(id, ts, ""), body, signedAt, webhook.ErrInvalidSignature},
		{"old timestamp", secret, header(id, ts, sig), body, signedAt.Add(6 * time.Minute), webhook.ErrInvalidTimestamp},
		{"future timestamp", secret, header(id, ts, sig), body, signedAt.Add(-6 * time.Minute), webhook.ErrInvalidTimestamp},
		{"replayed with a fresh timestamp", secret, header(id, "1614265700", sig), body, signedAt.Add(370 * time.Second), webhook.ErrInvalidSignature},
		{"timestamp not a number", secret, header(id, "yesterday", sig), body, signedAt, webhook.ErrInvalidTimestamp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := webhook.Verify(tt.secret, tt.header, []byte(tt.body), tt.now, 5*time.Minute)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("Verify: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     webhook.Config
		wantErr bool
	}{
		{"good", webhook.Config{URL: "https://push.example.com/evict", Secret: secret}, false},
		{"no URL", webhook.Config{Secret: secret}, true},
		{"not http", webhook.Config{URL: "ftp://push.example.com", Secret: secret}, true},
		{"no secret", webhook.Config{URL: "https://push.example.com"}, true},
		{"no prefix", webhook.Config{URL: "https://push.example.com", Secret: secret[len("whsec_"):]}, true},
		{"not base64", webhook.Config{URL: "https://push.example.com", Secret: "whsec_not base64!"}, true},
		{"too short", webhook.Config{URL: "https://push.example.com", Secret: "whsec_c2hvcnQ="}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := webhook.New(tt.cfg); (err != nil) != tt.wantErr {
				t.Errorf("New: %v, want error = %v", err, tt.wantErr)
			}
		})
	}
}
