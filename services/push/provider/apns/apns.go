// Package apns sends logout pushes through Apple's HTTP/2 provider API with
// token-based authentication.
//
// The provider token is an ES256 JWT signed with the team's .p8 key. Apple
// refuses tokens older than an hour and throttles clients that sign new ones
// more often than every 20 minutes, so one token is cached and shared by all
// sends and replaced when it is 50 minutes old, or at once when Apple answers
// 403 ExpiredProviderToken (after which the push is sent once more).
//
// By default the push is silent: apns-push-type background, priority 5 and
// content-available 1, which wakes the app so it can drop the session. A
// Push with an Alert is sent as an alert (priority 10) and still carries
// content-available.
package apns

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/evict-dev/evict/services/push/provider"
	"github.com/evict-dev/evict/services/push/provider/internal/jose"
	"github.com/evict-dev/evict/services/push/provider/internal/transport"
)

// Name is the provider's name, as registered on devices.
const Name = "apns"

// Apple's endpoints for Config.BaseURL.
const (
	Production = "https://api.push.apple.com"
	Sandbox    = "https://api.sandbox.push.apple.com"
)

// TokenMaxAge is the age at which the cached provider token is replaced:
// Apple refuses tokens older than 60 minutes and refuses new ones more often
// than every 20.
const TokenMaxAge = 50 * time.Minute

// MaxPayload is the largest payload APNs accepts for a non-VoIP push, in
// bytes. A larger one is refused before it is sent.
const MaxPayload = 4096

// Reasons APNs answers with (the "reason" of its error JSON) that the client
// treats specially.
const (
	ReasonBadDeviceToken         = "BadDeviceToken"
	ReasonDeviceTokenNotForTopic = "DeviceTokenNotForTopic"
	ReasonUnregistered           = "Unregistered"
	ReasonExpiredProviderToken   = "ExpiredProviderToken"
	ReasonIdleTimeout            = "IdleTimeout"
)

// Config configures a Client.
type Config struct {
	// BaseURL is the API's origin: Production (the default), Sandbox for
	// development builds of the app, or any URL (tests). Service wiring:
	// EVICT_APNS_URL.
	BaseURL string
	// KeyFile is the path of the .p8 signing key (PKCS#8 PEM, EC P-256)
	// downloaded from the Apple developer account; EVICT_APNS_KEY_FILE.
	// Exactly one of KeyFile and KeyPEM is required.
	KeyFile string
	// KeyPEM is the .p8 key's content, for keys that do not live in a file.
	KeyPEM []byte
	// KeyID is the key's 10-character identifier, the JWT's kid;
	// EVICT_APNS_KEY_ID. Required.
	KeyID string
	// TeamID is the developer team's identifier, the JWT's iss;
	// EVICT_APNS_TEAM_ID. Required.
	TeamID string
	// Topic is the apns-topic (the app's bundle id) of pushes that name
	// none; EVICT_APNS_TOPIC.
	Topic string
	// HTTPClient sends the requests. Default: HTTP/2 over TLS verified
	// against the system roots (SSL_CERT_FILE applies), 30 s per request.
	// A client of one's own must speak HTTP/2: APNs refuses HTTP/1.1.
	HTTPClient *http.Client
	// Now is the clock that dates provider tokens; default time.Now.
	Now func() time.Time
	// Logger; default slog.Default(). Tokens and keys are never logged.
	Logger *slog.Logger
}

// Client sends pushes to APNs. It is safe for concurrent use; share one per
// key so that all sends use one provider token and one HTTP/2 connection.
type Client struct {
	base   string
	key    *ecdsa.PrivateKey
	keyID  string
	teamID string
	topic  string
	http   *http.Client
	now    func() time.Time
	log    *slog.Logger

	mu     sync.Mutex
	jwt    string    // cached provider token; "" when none
	jwtIAT time.Time // its iat
}

var _ provider.Sender = (*Client)(nil)

// New returns a Client for cfg. It reads and checks the key; it does not
// contact Apple.
func New(cfg Config) (*Client, error) {
	if cfg.KeyID == "" || cfg.TeamID == "" {
		return nil, errors.New("apns: Config.KeyID and Config.TeamID are required")
	}
	pemBytes := cfg.KeyPEM
	switch {
	case cfg.KeyFile != "" && len(cfg.KeyPEM) != 0:
		return nil, errors.New("apns: set Config.KeyFile or Config.KeyPEM, not both")
	case cfg.KeyFile != "":
		b, err := os.ReadFile(cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("apns: read key: %w", err)
		}
		pemBytes = b
	case len(pemBytes) == 0:
		return nil, errors.New("apns: Config.KeyFile or Config.KeyPEM is required")
	}
	signer, err := jose.ParsePrivateKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("apns: key: %w", err)
	}
	key, ok := signer.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("apns: key is %T, want an EC P-256 key (.p8)", signer)
	}
	base := cfg.BaseURL
	if base == "" {
		base = Production
	}
	if u, err := url.Parse(base); err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("apns: Config.BaseURL %q is not an absolute URL", base)
	}
	c := &Client{
		base:   strings.TrimRight(base, "/"),
		key:    key,
		keyID:  cfg.KeyID,
		teamID: cfg.TeamID,
		topic:  cfg.Topic,
		http:   cfg.HTTPClient,
		now:    cfg.Now,
		log:    cfg.Logger,
	}
	if c.http == nil {
		c.http = transport.NewClient()
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.log = c.log.With("provider", Name)
	return c, nil
}

// Name returns "apns".
func (c *Client) Name() string { return Name }

// Send posts p to /3/device/{token}. The Result's ProviderID is the apns-id
// Apple echoes, which is p.MessageID(). See provider.Sender for the errors.
func (c *Client) Send(ctx context.Context, p provider.Push) (provider.Result, error) {
	topic := p.Topic
	if topic == "" {
		topic = c.topic
	}
	if topic == "" {
		// Token authentication requires apns-topic; Apple would answer
		// 400 MissingTopic for every push.
		return provider.Result{}, &provider.Error{Provider: Name, Reason: "MissingTopic", Kind: provider.KindPermanent}
	}
	if p.Token == "" {
		return provider.Result{}, &provider.Error{Provider: Name, Reason: "MissingDeviceToken", Kind: provider.KindTokenInvalid}
	}
	body, err := json.Marshal(payload(p))
	if err != nil {
		return provider.Result{}, fmt.Errorf("apns: encode payload: %w", err)
	}
	if len(body) > MaxPayload {
		return provider.Result{}, &provider.Error{Provider: Name, Reason: "PayloadTooLarge", Kind: provider.KindPermanent,
			Message: fmt.Sprintf("%d bytes, limit %d", len(body), MaxPayload)}
	}
	id := p.MessageID()
	for retried := false; ; retried = true {
		jwt, err := c.providerToken(ctx)
		if err != nil {
			return provider.Result{}, err
		}
		res, err := c.post(ctx, jwt, topic, id, p, body)
		var e *provider.Error
		if !retried && errors.As(err, &e) && e.Reason == ReasonExpiredProviderToken {
			// Apple's clock or ours disagrees with the token's age:
			// sign a new token and try once more.
			c.log.InfoContext(ctx, "apns provider token expired early; signing a new one", "key_id", c.keyID)
			c.expire(jwt)
			continue
		}
		return res, err
	}
}

func (c *Client) post(ctx context.Context, jwt, topic, id string, p provider.Push, body []byte) (provider.Result, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/3/device/"+url.PathEscape(p.Token), bytes.NewReader(body))
	if err != nil {
		return provider.Result{}, fmt.Errorf("apns: build request: %w", err)
	}
	h := req.Header
	h.Set("authorization", "bearer "+jwt)
	h.Set("content-type", "application/json")
	h.Set("apns-id", id)
	h.Set("apns-topic", topic)
	if p.Alert != nil {
		h.Set("apns-push-type", "alert")
		h.Set("apns-priority", "10")
	} else {
		// Apple requires priority 5 for background pushes and throttles
		// or drops priority-10 ones.
		h.Set("apns-push-type", "background")
		h.Set("apns-priority", "5")
	}
	if p.CollapseID != "" {
		h.Set("apns-collapse-id", p.CollapseID)
	}
	h.Set("apns-expiration", expiration(p.Expiration))

	resp, err := transport.Do(ctx, c.http, Name, req)
	if err != nil {
		return provider.Result{}, err
	}
	respBody := transport.ReadBody(resp, transport.MaxErrorBody)
	res := provider.Result{Status: resp.StatusCode, ProviderID: resp.Header.Get("apns-id")}
	if res.ProviderID == "" {
		res.ProviderID = id
	}
	if resp.StatusCode == http.StatusOK {
		return res, nil
	}
	var answer struct {
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal(respBody, &answer) // a body that is not APNs JSON leaves Reason empty
	if answer.Reason == "" {
		answer.Reason = http.StatusText(resp.StatusCode)
	}
	e := &provider.Error{
		Provider: Name,
		Status:   resp.StatusCode,
		Reason:   answer.Reason,
		Kind:     classify(resp.StatusCode, answer.Reason),
	}
	if e.Kind == provider.KindRetryable {
		e.RetryAfter = transport.RetryAfter(resp.Header, c.now())
		res.RetryAfter = e.RetryAfter
	}
	return res, e
}

// classify maps an APNs error answer to what the caller should do, following
// Apple's table of status codes and reasons.
func classify(status int, reason string) provider.Kind {
	switch {
	case status == http.StatusGone: // Unregistered, ExpiredToken
		return provider.KindTokenInvalid
	case status == http.StatusBadRequest && (reason == ReasonBadDeviceToken || reason == ReasonDeviceTokenNotForTopic):
		return provider.KindTokenInvalid
	case status == http.StatusBadRequest && reason == ReasonIdleTimeout:
		return provider.KindRetryable // the connection, not the push
	case status == http.StatusForbidden: // provider token or certificate refused
		return provider.KindAuth
	case status == http.StatusTooManyRequests || status >= 500:
		return provider.KindRetryable
	}
	return provider.KindPermanent
}

// providerToken returns the cached provider token, signing a new one when
// there is none or it is TokenMaxAge old. Signing is local and fast, so it
// happens under the lock and concurrent sends sign at most once.
func (c *Client) providerToken(ctx context.Context) (string, error) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if age := now.Sub(c.jwtIAT); c.jwt != "" && age >= 0 && age < TokenMaxAge {
		return c.jwt, nil
	}
	type claims struct {
		Iss string `json:"iss"`
		Iat int64  `json:"iat"`
	}
	jwt, err := jose.ES256(c.key, jose.Header{Kid: c.keyID}, claims{Iss: c.teamID, Iat: now.Unix()})
	if err != nil {
		return "", fmt.Errorf("apns: provider token: %w", err)
	}
	c.jwt, c.jwtIAT = jwt, now
	c.log.DebugContext(ctx, "apns provider token signed", "key_id", c.keyID)
	return jwt, nil
}

// expire drops jwt from the cache unless another send already replaced it,
// so that a burst of ExpiredProviderToken answers signs one new token, not
// one per answer (Apple throttles frequent token updates).
func (c *Client) expire(jwt string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.jwt == jwt {
		c.jwt = ""
	}
}

type aps struct {
	ContentAvailable int             `json:"content-available"`
	Alert            *provider.Alert `json:"alert,omitempty"`
}

// payload is the JSON the app receives: Apple's aps dictionary and the
// logout under "evict".
func payload(p provider.Push) any {
	return struct {
		APS   aps               `json:"aps"`
		Evict map[string]string `json:"evict"`
	}{aps{ContentAvailable: 1, Alert: p.Alert}, p.Data()}
}

// expiration is the apns-expiration value: a UNIX time in seconds, or 0 for
// "deliver now or never".
func expiration(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return strconv.FormatInt(max(t.Unix(), 0), 10)
}
