// Package webhook hands logout pushes to an in-house push gateway: a JSON
// POST signed per the Standard Webhooks specification
// (https://www.standardwebhooks.com), so that the gateway can check that the
// push comes from evict and is fresh.
//
// Each request carries webhook-id (the same on every retry of a push, so the
// gateway can drop duplicates), webhook-timestamp (UNIX seconds) and
// webhook-signature ("v1," and the base64 HMAC-SHA256 of
// "id.timestamp.body" under the shared secret). Receivers check them with
// Verify.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/evict-dev/evict/services/push/provider"
	"github.com/evict-dev/evict/services/push/provider/internal/transport"
)

// Name is the provider's name, as registered on devices.
const Name = "webhook"

// EventType is the type of the Event every push carries.
const EventType = "evict.push.logout"

// The Standard Webhooks headers.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// minSecret is the shortest secret accepted, in bytes. Standard Webhooks
// asks for 24 to 64; fewer than 16 would be guessable.
const minSecret = 16

// secretPrefix starts a Standard Webhooks secret; the rest is base64.
const secretPrefix = "whsec_"

// Event is the JSON body of a push: the Standard Webhooks envelope (type,
// timestamp, data) around what the gateway needs to reach the device.
type Event struct {
	// Type is EventType.
	Type string `json:"type"`
	// Timestamp is when the push was sent.
	Timestamp time.Time `json:"timestamp"`
	// Data is the push.
	Data EventData `json:"data"`
}

// EventData says which device to notify and what to deliver to it.
type EventData struct {
	// Token is the device's token as the gateway registered it.
	Token string `json:"token"`
	// Topic, Project and CollapseID are Push's, for gateways that relay to
	// APNs or FCM themselves; empty ones are omitted.
	Topic      string `json:"topic,omitempty"`
	Project    string `json:"project,omitempty"`
	CollapseID string `json:"collapse_id,omitempty"`
	// Expiration is when delivery stops being useful; omitted for "now or
	// never".
	Expiration *time.Time `json:"expiration,omitempty"`
	// Alert is the visible part, if any.
	Alert *provider.Alert `json:"alert,omitempty"`
	// Payload is what the app receives: provider.Push.Data.
	Payload map[string]string `json:"payload"`
}

// Config configures a Client.
type Config struct {
	// URL receives the POSTs; EVICT_WEBHOOK_URL. Required.
	URL string
	// Secret is the shared secret, "whsec_" followed by the standard
	// base64 of 24 to 64 random bytes (at least 16);
	// EVICT_WEBHOOK_SECRET. Required.
	Secret string
	// HTTPClient sends the requests. Default: HTTP/2 when the gateway
	// offers it, TLS verified against the system roots (SSL_CERT_FILE
	// applies), 30 s per request.
	HTTPClient *http.Client
	// Now dates the requests; default time.Now.
	Now func() time.Time
}

// Client posts pushes to a gateway. It is safe for concurrent use.
type Client struct {
	url  string
	key  []byte
	http *http.Client
	now  func() time.Time
}

var _ provider.Sender = (*Client)(nil)

// New returns a Client for cfg. It does not contact the gateway.
func New(cfg Config) (*Client, error) {
	if u, err := url.Parse(cfg.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("webhook: Config.URL %q is not an http(s) URL", cfg.URL)
	}
	key, err := parseSecret(cfg.Secret)
	if err != nil {
		return nil, err
	}
	c := &Client{url: cfg.URL, key: key, http: cfg.HTTPClient, now: cfg.Now}
	if c.http == nil {
		c.http = transport.NewClient()
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// Name returns "webhook".
func (c *Client) Name() string { return Name }

// Send posts p as an Event. 2xx is success, 410 Gone means the token is
// dead (ErrTokenInvalid), 408, 429 and 5xx are retryable (honouring
// Retry-After), 401 and 403 mean the gateway refuses our signature (ErrAuth),
// anything else is permanent. The Result's ProviderID is the webhook-id.
func (c *Client) Send(ctx context.Context, p provider.Push) (provider.Result, error) {
	if p.Token == "" {
		return provider.Result{}, &provider.Error{Provider: Name, Reason: "MissingToken", Kind: provider.KindTokenInvalid}
	}
	now := c.now()
	ev := Event{Type: EventType, Timestamp: now.UTC(), Data: EventData{
		Token:      p.Token,
		Topic:      p.Topic,
		Project:    p.Project,
		CollapseID: p.CollapseID,
		Alert:      p.Alert,
		Payload:    p.Data(),
	}}
	if !p.Expiration.IsZero() {
		exp := p.Expiration.UTC()
		ev.Data.Expiration = &exp
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return provider.Result{}, fmt.Errorf("webhook: encode event: %w", err)
	}
	id := "msg_" + p.MessageID()
	ts := strconv.FormatInt(now.Unix(), 10)

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return provider.Result{}, fmt.Errorf("webhook: build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderID, id)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, "v1,"+sign(c.key, id, ts, body))

	resp, err := transport.Do(ctx, c.http, Name, req)
	if err != nil {
		return provider.Result{}, err
	}
	respBody := transport.ReadBody(resp, transport.MaxErrorBody)
	res := provider.Result{Status: resp.StatusCode, ProviderID: id}
	if resp.StatusCode/100 == 2 {
		return res, nil
	}
	e := &provider.Error{Provider: Name, Status: resp.StatusCode, Reason: http.StatusText(resp.StatusCode), Message: firstLine(respBody)}
	switch s := resp.StatusCode; {
	case s == http.StatusGone:
		e.Kind = provider.KindTokenInvalid
	case s == http.StatusRequestTimeout || s == http.StatusTooManyRequests || s >= 500:
		e.Kind = provider.KindRetryable
		e.RetryAfter = transport.RetryAfter(resp.Header, now)
		res.RetryAfter = e.RetryAfter
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		e.Kind = provider.KindAuth
	default:
		e.Kind = provider.KindPermanent
	}
	return res, e
}

// firstLine returns the start of an error answer, for logs: enough to see
// what the gateway said, not a page of HTML.
func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.TrimSpace(s)
}

func sign(key []byte, id, ts string, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func parseSecret(secret string) ([]byte, error) {
	b64, ok := strings.CutPrefix(secret, secretPrefix)
	if !ok {
		return nil, errors.New("webhook: secret must start with " + secretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("webhook: secret is not base64: %w", err)
	}
	if len(key) < minSecret {
		return nil, fmt.Errorf("webhook: secret is %d bytes, want at least %d", len(key), minSecret)
	}
	return key, nil
}
