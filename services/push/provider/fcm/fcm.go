// Package fcm sends logout pushes through the Firebase Cloud Messaging HTTP
// v1 API, authenticated with a service account.
//
// The service account's key signs an RS256 JWT assertion, which its token_uri
// exchanges for an OAuth 2.0 access token (RFC 7523). The access token is
// cached and shared by all sends until shortly before it expires, and
// replaced once when FCM answers 401.
//
// The push is a data message: Android delivers it to the app's messaging
// service even in the background (with high priority, so a dozing device
// wakes), and the apns block makes it a silent background push on iOS. A
// visible alert is not sent as an FCM notification, which on Android would
// bypass the app while it is in the background; its title and body travel
// as the data keys alert_title and alert_body for the app to show, and as
// aps.alert on iOS.
package fcm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/evict-dev/evict/services/push/provider"
	"github.com/evict-dev/evict/services/push/provider/internal/transport"
)

// Name is the provider's name, as registered on devices.
const Name = "fcm"

// DefaultBaseURL is the FCM API's origin.
const DefaultBaseURL = "https://fcm.googleapis.com"

// MaxTTL is the longest time-to-live FCM accepts (4 weeks); a later
// Push.Expiration is shortened to it.
const MaxTTL = 28 * 24 * time.Hour

// Config configures a Client.
type Config struct {
	// CredentialsFile is the path of the service account's JSON key file;
	// EVICT_FCM_CREDENTIALS_FILE. Exactly one of CredentialsFile and
	// CredentialsJSON is required.
	CredentialsFile string
	// CredentialsJSON is the key file's content.
	CredentialsJSON []byte
	// BaseURL is the API's origin; default DefaultBaseURL. Service wiring:
	// EVICT_FCM_URL. The token endpoint is the key file's token_uri.
	BaseURL string
	// Project is the FCM project of pushes that name none; default the
	// service account's project_id.
	Project string
	// HTTPClient sends the requests, to FCM and to the token endpoint.
	// Default: HTTP/2 over TLS verified against the system roots
	// (SSL_CERT_FILE applies), 30 s per request.
	HTTPClient *http.Client
	// Now is the clock that dates assertions and ages access tokens;
	// default time.Now.
	Now func() time.Time
	// Logger; default slog.Default(). Tokens and keys are never logged.
	Logger *slog.Logger
}

// Client sends pushes to FCM. It is safe for concurrent use; share one per
// service account so that all sends use one access token.
type Client struct {
	base    string
	project string
	http    *http.Client
	now     func() time.Time
	log     *slog.Logger
	tokens  *tokenSource
}

var _ provider.Sender = (*Client)(nil)

// New returns a Client for cfg. It reads and checks the credentials; it does
// not contact Google (the first Send fetches the access token).
func New(cfg Config) (*Client, error) {
	creds, err := loadCredentials(cfg.CredentialsFile, cfg.CredentialsJSON)
	if err != nil {
		return nil, err
	}
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	if u, err := url.Parse(base); err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("fcm: Config.BaseURL %q is not an absolute URL", base)
	}
	c := &Client{
		base:    strings.TrimRight(base, "/"),
		project: cfg.Project,
		http:    cfg.HTTPClient,
		now:     cfg.Now,
		log:     cfg.Logger,
	}
	if c.project == "" {
		c.project = creds.ProjectID
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
	c.tokens = newTokenSource(creds, c.http, c.now, c.log)
	return c, nil
}

// Name returns "fcm".
func (c *Client) Name() string { return Name }

// Send posts p to /v1/projects/{project}/messages:send. The Result's
// ProviderID is the message name FCM returns
// ("projects/{project}/messages/{id}"). See provider.Sender for the errors.
func (c *Client) Send(ctx context.Context, p provider.Push) (provider.Result, error) {
	project := p.Project
	if project == "" {
		project = c.project
	}
	if project == "" {
		return provider.Result{}, &provider.Error{Provider: Name, Reason: "MissingProject", Kind: provider.KindPermanent}
	}
	if p.Token == "" {
		return provider.Result{}, &provider.Error{Provider: Name, Reason: "MissingToken", Kind: provider.KindTokenInvalid}
	}
	body, err := json.Marshal(struct {
		Message message `json:"message"`
	}{c.message(p)})
	if err != nil {
		return provider.Result{}, fmt.Errorf("fcm: encode message: %w", err)
	}
	endpoint := c.base + "/v1/projects/" + url.PathEscape(project) + "/messages:send"
	for retried := false; ; retried = true {
		tok, err := c.tokens.token(ctx)
		if err != nil {
			return provider.Result{}, err
		}
		res, err := c.post(ctx, endpoint, tok, body)
		var e *provider.Error
		if !retried && errors.As(err, &e) && e.Status == http.StatusUnauthorized {
			// The token may have been revoked or have expired early:
			// fetch a new one and try once more.
			c.log.InfoContext(ctx, "fcm refused the access token; fetching a new one")
			c.tokens.expire(tok)
			continue
		}
		return res, err
	}
}

func (c *Client) post(ctx context.Context, endpoint, tok string, body []byte) (provider.Result, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return provider.Result{}, fmt.Errorf("fcm: build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := transport.Do(ctx, c.http, Name, req)
	if err != nil {
		return provider.Result{}, err
	}
	respBody := transport.ReadBody(resp, transport.MaxErrorBody)
	res := provider.Result{Status: resp.StatusCode}
	if resp.StatusCode/100 == 2 {
		var ok struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(respBody, &ok); err != nil {
			// FCM accepted the message; an unreadable answer must not
			// make the caller send it again.
			c.log.WarnContext(ctx, "fcm accepted a message with an unreadable answer", "err", err)
		}
		res.ProviderID = ok.Name
		return res, nil
	}
	e := parseError(resp.StatusCode, respBody)
	if e.Kind == provider.KindRetryable {
		e.RetryAfter = transport.RetryAfter(resp.Header, c.now())
		res.RetryAfter = e.RetryAfter
	}
	return res, e
}

// message is the v1 Message resource, reduced to what a logout uses.
type message struct {
	Token   string            `json:"token"`
	Data    map[string]string `json:"data"`
	Android android           `json:"android"`
	APNS    apnsConfig        `json:"apns"`
}

type android struct {
	Priority    string `json:"priority"`
	CollapseKey string `json:"collapse_key,omitempty"`
	TTL         string `json:"ttl"`
}

type apnsConfig struct {
	Headers map[string]string `json:"headers"`
	Payload apnsPayload       `json:"payload"`
}

type apnsPayload struct {
	APS struct {
		ContentAvailable int             `json:"content-available"`
		Alert            *provider.Alert `json:"alert,omitempty"`
	} `json:"aps"`
}

func (c *Client) message(p provider.Push) message {
	data := p.Data()
	if p.Alert != nil {
		data["alert_title"] = p.Alert.Title
		data["alert_body"] = p.Alert.Body
	}
	m := message{
		Token: p.Token,
		Data:  data,
		// HIGH is delivered at once, even to a device in Doze. FCM may
		// demote the high-priority messages of an app that seldom shows
		// a notification for them; a demoted logout still arrives, later.
		Android: android{Priority: "HIGH", CollapseKey: p.CollapseID, TTL: "0s"},
		APNS: apnsConfig{Headers: map[string]string{
			"apns-push-type":  "background",
			"apns-priority":   "5",
			"apns-expiration": "0",
		}},
	}
	m.APNS.Payload.APS.ContentAvailable = 1
	if p.Alert != nil {
		m.APNS.Headers["apns-push-type"] = "alert"
		m.APNS.Headers["apns-priority"] = "10"
		m.APNS.Payload.APS.Alert = p.Alert
	}
	if p.CollapseID != "" {
		m.APNS.Headers["apns-collapse-id"] = p.CollapseID
	}
	if !p.Expiration.IsZero() {
		ttl := min(max(p.Expiration.Sub(c.now()), 0), MaxTTL)
		m.Android.TTL = strconv.FormatInt(int64((ttl+time.Second-1)/time.Second), 10) + "s"
		m.APNS.Headers["apns-expiration"] = strconv.FormatInt(max(p.Expiration.Unix(), 0), 10)
	}
	return m
}
