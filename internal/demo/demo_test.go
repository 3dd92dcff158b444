package demo_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/evict-dev/evict/internal/demo"
	"github.com/evict-dev/evict/internal/evictd"
	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/pkg/client"
	"github.com/evict-dev/evict/pkg/guard"
)

// TestGroupRemovalFlipsTheDemoFrom200To401 is the README walkthrough as a
// test: log in to the demo backend, get 200 from /me, remove the user from
// a group through evict's API, get 401 session_revoked; the live SSE
// connection ends with a "revoked" event.
func TestGroupRemovalFlipsTheDemoFrom200To401(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	d, err := evictd.Start(ctx, evictd.Config{
		DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", DatabaseURL: testenv.Database(t), HTTPAddr: "127.0.0.1:0",
		AdminToken: "demo-token", SessionMaxAge: time.Hour, Replicas: 1, RelayBatch: 100,
		HeartbeatInterval: 50 * time.Millisecond, Logger: quiet,
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = d.Wait() })

	g := testenv.Guard(t, d.NATSURL, guard.Config{})

	api := client.New("http://"+d.HTTPAddr, "demo-token", nil)
	srv := httptest.NewServer(demo.New(api, g, quiet).Handler())
	t.Cleanup(srv.Close)
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 30 * time.Second}

	if _, err := api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := api.AddMember(ctx, "acme", "site-7", "alice"); err != nil {
		t.Fatal(err)
	}
	resp, err := browser.Post(srv.URL+"/login", "application/json", strings.NewReader(`{"tenant":"acme","user":"alice"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	if code, body := get(t, browser, srv.URL+"/me"); code != http.StatusOK || !strings.Contains(body, `"user":"alice"`) {
		t.Fatalf("/me before removal: %d %s", code, body)
	}

	// A live connection of the session.
	stream, err := browser.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	sse := bufio.NewScanner(stream.Body)
	if !sse.Scan() || sse.Text() != "event: hello" {
		t.Fatalf("SSE did not start: %q", sse.Text())
	}

	if _, err := api.RemoveMember(ctx, "acme", "site-7", "alice", "moved to another site"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	var code int
	var body string
	for time.Now().Before(deadline) {
		if code, body = get(t, browser, srv.URL+"/me"); code == http.StatusUnauthorized {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	var refusal map[string]string
	if code != http.StatusUnauthorized || json.Unmarshal([]byte(body), &refusal) != nil || refusal["error"] != "session_revoked" {
		t.Fatalf("/me after removal: %d %s; want 401 session_revoked", code, body)
	}
	revoked := false
	for sse.Scan() {
		if sse.Text() == "event: revoked" {
			revoked = true
			break
		}
	}
	if !revoked {
		t.Error("the live SSE connection did not end with a revoked event")
	}

	// Logging in again gives a fresh, valid session.
	resp, err = browser.Post(srv.URL+"/login", "application/json", strings.NewReader(`{"tenant":"acme","user":"alice"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code, body := get(t, browser, srv.URL+"/me"); code != http.StatusOK {
		t.Fatalf("/me after a new login: %d %s", code, body)
	}
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
