package fcm

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/evict-dev/evict/services/push/provider"
	"github.com/evict-dev/evict/services/push/provider/internal/jose"
	"github.com/evict-dev/evict/services/push/provider/internal/transport"
)

// Scope is the OAuth scope the access token is requested for.
const Scope = "https://www.googleapis.com/auth/firebase.messaging"

// assertionLifetime is the assertion's exp - iat; Google accepts at most an
// hour.
const assertionLifetime = time.Hour

// refreshMargin is how long before its expiry an access token is replaced,
// so that a token does not expire between the check and FCM's.
const refreshMargin = time.Minute

// tokenSource caches one access token and fetches a new one when it nears
// its expiry. One fetch runs at a time; the others wait for it (or for their
// context) instead of each asking the token endpoint.
type tokenSource struct {
	creds *credentials
	http  *http.Client
	now   func() time.Time
	log   *slog.Logger

	fetch chan struct{} // held during a fetch; a channel so waiting honours ctx

	mu        sync.Mutex
	tok       string
	refreshAt time.Time
}

func newTokenSource(creds *credentials, hc *http.Client, now func() time.Time, log *slog.Logger) *tokenSource {
	return &tokenSource{creds: creds, http: hc, now: now, log: log, fetch: make(chan struct{}, 1)}
}

// token returns a valid access token, fetching one if needed.
func (s *tokenSource) token(ctx context.Context) (string, error) {
	if tok := s.cached(); tok != "" {
		return tok, nil
	}
	select {
	case s.fetch <- struct{}{}:
		defer func() { <-s.fetch }()
	case <-ctx.Done():
		return "", fmt.Errorf("fcm: access token: %w", ctx.Err())
	}
	if tok := s.cached(); tok != "" { // fetched while we waited
		return tok, nil
	}
	tok, lifetime, err := s.exchange(ctx)
	if err != nil {
		return "", err
	}
	now := s.now()
	s.mu.Lock()
	s.tok = tok
	// A token lives about an hour; one that lives less than twice the
	// margin is kept for half its life.
	s.refreshAt = now.Add(lifetime - min(refreshMargin, lifetime/2))
	s.mu.Unlock()
	s.log.DebugContext(ctx, "fcm access token fetched", "client_email", s.creds.ClientEmail, "expires_in", lifetime)
	return tok, nil
}

func (s *tokenSource) cached() string {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok != "" && now.Before(s.refreshAt) {
		return s.tok
	}
	return ""
}

// expire drops tok unless it was already replaced, so that a burst of 401s
// fetches one new token.
func (s *tokenSource) expire(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok == tok {
		s.tok = ""
	}
}

// exchange trades a signed assertion for an access token at the key file's
// token_uri (RFC 7523 §2.1).
func (s *tokenSource) exchange(ctx context.Context) (string, time.Duration, error) {
	iat := s.now()
	assertion, err := jose.RS256(s.creds.key, jose.Header{Typ: "JWT", Kid: s.creds.PrivateKeyID}, struct {
		Iss   string `json:"iss"`
		Scope string `json:"scope"`
		Aud   string `json:"aud"`
		Iat   int64  `json:"iat"`
		Exp   int64  `json:"exp"`
	}{s.creds.ClientEmail, Scope, s.creds.TokenURI, iat.Unix(), iat.Add(assertionLifetime).Unix()})
	if err != nil {
		return "", 0, fmt.Errorf("fcm: sign assertion: %w", err)
	}
	form := url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"},
		"assertion":  {assertion},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.creds.TokenURI, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, fmt.Errorf("fcm: build token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := transport.Do(ctx, s.http, Name, req)
	if err != nil {
		return "", 0, err
	}
	body := transport.ReadBody(resp, transport.MaxErrorBody)
	var answer struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		TokenType   string `json:"token_type"`
		// RFC 6749 §5.2 error answer.
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	jsonErr := json.Unmarshal(body, &answer)
	if resp.StatusCode != http.StatusOK {
		e := &provider.Error{
			Provider: Name,
			Status:   resp.StatusCode,
			Reason:   "token: " + answer.Error,
			Message:  answer.ErrorDescription,
			// invalid_grant, invalid_client...: the key or its account
			// is refused, and will be until someone fixes it.
			Kind: provider.KindAuth,
		}
		if answer.Error == "" {
			e.Reason = "token: " + http.StatusText(resp.StatusCode)
		}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			e.Kind = provider.KindRetryable
			e.RetryAfter = transport.RetryAfter(resp.Header, s.now())
		}
		return "", 0, e
	}
	if jsonErr != nil || answer.AccessToken == "" || !strings.EqualFold(answer.TokenType, "Bearer") {
		// A 200 without a usable token is not an answer Google gives;
		// a proxy in the way is the likelier cause, and it may recover.
		return "", 0, &provider.Error{Provider: Name, Status: resp.StatusCode, Reason: "token: malformed answer", Kind: provider.KindRetryable, Err: jsonErr}
	}
	return answer.AccessToken, time.Duration(answer.ExpiresIn) * time.Second, nil
}
