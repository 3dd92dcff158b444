// Package transport holds the HTTP plumbing every push provider shares: the
// default client, Retry-After parsing and the classification of failures
// that happen before a provider answers.
package transport

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/evict-dev/evict/services/push/provider"
)

// MaxErrorBody bounds how much of an error answer is read: providers answer
// with a few hundred bytes of JSON, and a misbehaving endpoint must not make
// us buffer megabytes.
const MaxErrorBody = 64 << 10

// NewClient returns the client the providers use when configured with none:
// HTTP/2 over TLS (APNs accepts nothing else), server certificates verified
// against the system roots (so SSL_CERT_FILE and SSL_CERT_DIR work), and
// timeouts that bound every phase, so a provider that stops answering costs
// a retry, not a stuck worker. HTTP/2 pings detect a dead long-lived
// connection before a push is lost in it.
func NewClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy: http.ProxyFromEnvironment,
			DialContext: (&net.Dialer{
				Timeout:   10 * time.Second,
				KeepAlive: 30 * time.Second,
			}).DialContext,
			ForceAttemptHTTP2:     true,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 20 * time.Second,
			IdleConnTimeout:       5 * time.Minute,
			MaxIdleConnsPerHost:   16,
			HTTP2: &http.HTTP2Config{
				SendPingTimeout: time.Minute,
				PingTimeout:     15 * time.Second,
			},
		},
	}
}

// maxRetryAfter caps Retry-After, in seconds: a day is already absurd for a
// logout, and a larger value is more likely garbage than advice.
const maxRetryAfter = 24 * 60 * 60

// RetryAfter parses a Retry-After header, either delay-seconds or an
// HTTP-date (RFC 9110 §10.2.3), relative to now. Absent, unparsable or past
// values are 0.
func RetryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, maxRetryAfter)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter*time.Second)
	}
	return 0
}

// Do sends req with c and turns a failure to get an answer into a retryable
// *provider.Error, or, when ctx ended, into an error wrapping ctx.Err() (the
// caller is shutting down or gave up; that is not the provider's fault).
func Do(ctx context.Context, c *http.Client, name string, req *http.Request) (*http.Response, error) {
	resp, err := c.Do(req)
	if err == nil {
		return resp, nil
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%s: send: %w", name, ctx.Err())
	}
	return nil, &provider.Error{Provider: name, Reason: "network", Kind: provider.KindRetryable, Err: err}
}

// ReadBody reads at most limit bytes of resp's body and closes it. Reading to
// the end (up to the limit) lets the connection be reused.
func ReadBody(resp *http.Response, limit int64) []byte {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, limit))
	return b
}
