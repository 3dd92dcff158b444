package evictd_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/evict-dev/evict/internal/evictd"
	"github.com/evict-dev/evict/internal/testenv"
	"github.com/evict-dev/evict/pkg/client"
	"github.com/evict-dev/evict/pkg/guard"
)

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	id, kind string
	data     map[string]any
}

// openStream connects to a session stream, optionally resuming after lastID.
func openStream(t *testing.T, b *bundle, path, lastID string) (events <-chan sseEvent, closeFn func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.d.HTTPAddr+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		cancel()
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ch := make(chan sseEvent, 100)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				ev.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				ev.kind = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				_ = json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.data)
			case line == "" && ev.kind != "":
				ch <- ev
				ev = sseEvent{}
			}
		}
	}()
	return ch, cancel
}

func next(t *testing.T, ch <-chan sseEvent) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("stream closed")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return sseEvent{}
}

// TestSessionStreamInOrderAndResumes: a live view sees a session start, get
// revoked and end, in order; after a dropped connection it resumes from
// Last-Event-ID with no gap and no repeat.
func TestSessionStreamInOrderAndResumes(t *testing.T) {
	b := setup(t, 0)
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/tenants/acme/sessions/stream", "/v1/tenants/acme/users/dave/sessions/stream"} {
		t.Run(path, func(t *testing.T) {
			sid := fmt.Sprintf("dave-%d", len(path))
			stream, stop := openStream(t, b, path, "")
			b.register(t, "acme", "erin", sid+"-other") // another user: only in the tenant stream
			b.register(t, "acme", "dave", sid)
			var first sseEvent
			for {
				first = next(t, stream)
				if first.data["session_id"] == sid {
					break
				}
				if strings.Contains(path, "/users/") {
					t.Fatalf("user stream sent another user's change: %v", first.data)
				}
			}
			if first.kind != "started" {
				t.Fatalf("first event %s, want started", first.kind)
			}
			stop() // the page loses its connection

			if _, err := b.api.LogoutSession(ctx, "acme", sid, ""); err != nil {
				t.Fatal(err)
			}
			if _, err := b.api.EndSession(ctx, "acme", sid); err != nil {
				t.Fatal(err)
			}
			resumed, stop2 := openStream(t, b, path, first.id)
			defer stop2()
			var kinds []string
			for len(kinds) < 2 {
				ev := next(t, resumed)
				if ev.data["session_id"] != sid {
					continue
				}
				kinds = append(kinds, ev.kind)
				if pos, fpos := feedPos(t, ev.id), feedPos(t, first.id); !fpos.before(pos) {
					t.Errorf("event id %s repeats or precedes %s", ev.id, first.id)
				}
			}
			if strings.Join(kinds, ",") != "revoked,ended" {
				t.Errorf("after resume: %v, want [revoked ended]", kinds)
			}
		})
	}
}

// TestSessionStreamSeesUserLogouts: a logout of one user, and of several
// in one command, reaches a live view as a "revoked" change of each of
// their sessions, naming the operation and its cause, at once: the
// command's commit wakes the stream, whose own look comes only every 15
// seconds, after the 10 that next waits.
func TestSessionStreamSeesUserLogouts(t *testing.T) {
	b := setup(t, 0)
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		users  []string
		logout func(users []string) (client.Accepted, error)
	}{
		{"one user", []string{"fay"}, func(u []string) (client.Accepted, error) { return b.api.LogoutUser(ctx, "acme", u[0], "") }},
		{"several users", []string{"gus", "hal", "ivy"}, func(u []string) (client.Accepted, error) { return b.api.LogoutUsers(ctx, "acme", u, "") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream, stop := openStream(t, b, "/v1/tenants/acme/sessions/stream", "")
			defer stop()
			want := map[string]string{} // session → user
			for _, u := range tt.users {
				sid := u + "-web"
				b.register(t, "acme", u, sid)
				want[sid] = u
			}
			for started := 0; started < len(want); {
				if ev := next(t, stream); ev.kind == "started" && want[fmt.Sprint(ev.data["session_id"])] != "" {
					started++
				}
			}
			acc, err := tt.logout(tt.users)
			if err != nil {
				t.Fatal(err)
			}
			for len(want) > 0 {
				ev := next(t, stream)
				sid := fmt.Sprint(ev.data["session_id"])
				if want[sid] == "" {
					continue
				}
				detail, _ := ev.data["detail"].(map[string]any)
				if ev.kind != "revoked" || ev.data["user_id"] != want[sid] || detail["operation_id"] != acc.OperationID || detail["cause"] != "logout" {
					t.Fatalf("change of %s: %s %v, want revoked of user %s by operation %s, cause logout", sid, ev.kind, ev.data, want[sid], acc.OperationID)
				}
				delete(want, sid)
			}
		})
	}
}

// TestSessionStreamHearsOtherReplicas: a live view served by one replica
// sees, well before its 15-second look, a session that another replica
// registered: the other's hint reaches it through the embedded NATS, as
// user evictd.
func TestSessionStreamHearsOtherReplicas(t *testing.T) {
	a := setup(t, 0)
	d, _ := startDaemon(t, a.dbURL, a.d.ServiceNATSURL)
	b := &bundle{d: d, api: client.New("http://"+d.HTTPAddr, token, nil), dbURL: a.dbURL}
	if _, err := a.api.CreateTenant(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	stream, stop := openStream(t, b, "/v1/tenants/acme/sessions/stream", "")
	defer stop()
	for i, via := range []*bundle{b, a} { // this replica first: the stream is past its first read
		sid := fmt.Sprintf("s%d", i)
		via.register(t, "acme", "dave", sid)
		if ev := next(t, stream); ev.kind != "started" || ev.data["session_id"] != sid {
			t.Fatalf("stream sent %s %v, want started %s", ev.kind, ev.data, sid)
		}
	}
}

// TestSessionListing: one user's sessions and the tenant's live sessions,
// with filters, prefix search, cursor pagination, totals and ETags.
func TestSessionListing(t *testing.T) {
	b := setup(t, 0)
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 7; i++ {
		c := "web"
		if i%2 == 1 {
			c = "mobile"
		}
		if _, err := b.api.RegisterSession(ctx, "acme", client.NewSession{SessionID: fmt.Sprintf("s%d", i),
			UserID: fmt.Sprintf("user-%d", i%3), Client: c, Holder: "h1"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.api.AddMember(ctx, "acme", "site-1", "user-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.api.LogoutSession(ctx, "acme", "s6", ""); err != nil { // user-0's newest: no longer live
		t.Fatal(err)
	}
	type page struct {
		Items []struct {
			SessionID string `json:"session_id"`
			UserID    string `json:"user_id"`
		} `json:"items"`
		Total      int    `json:"total"`
		TotalExact bool   `json:"total_exact"`
		NextCursor string `json:"next_cursor"`
	}
	get := func(path string) page {
		t.Helper()
		var p page
		if err := b.api.Do(ctx, http.MethodGet, path, nil, &p); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return p
	}
	ids := func(p page) string {
		var s []string
		for _, it := range p.Items {
			s = append(s, it.SessionID)
		}
		return strings.Join(s, ",")
	}
	tests := []struct {
		path      string
		wantIDs   string
		wantTotal int
	}{
		{"/v1/tenants/acme/sessions", "s5,s4,s3,s2,s1,s0", 6},
		{"/v1/tenants/acme/users/user-0/sessions", "s3,s0", 2},
		{"/v1/tenants/acme/sessions?client=mobile", "s5,s3,s1", 3},
		{"/v1/tenants/acme/sessions?q=user-1", "s4,s1", 2},
		{"/v1/tenants/acme/sessions?group=site-1", "s4,s1", 2},
		{"/v1/tenants/acme/sessions?holder=nobody", "", 0},
		{"/v1/tenants/acme/sessions?limit=4", "s5,s4,s3,s2", 6},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			p := get(tt.path)
			if ids(p) != tt.wantIDs || p.Total != tt.wantTotal || !p.TotalExact {
				t.Errorf("got %s total %d exact %v; want %s total %d", ids(p), p.Total, p.TotalExact, tt.wantIDs, tt.wantTotal)
			}
		})
	}
	// Cursor pagination walks every live session once (through the client).
	var all []string
	opts := client.ListOptions{Limit: 4}
	for {
		p, err := b.api.ListSessions(ctx, "acme", "", opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range p.Items {
			all = append(all, it.SessionID)
		}
		if p.NextCursor == "" {
			break
		}
		opts.Cursor = p.NextCursor
	}
	if strings.Join(all, ",") != "s5,s4,s3,s2,s1,s0" {
		t.Errorf("pages: %v", all)
	}
	// ETag: an unchanged listing answers 304; a change gives a new body.
	req, _ := http.NewRequest(http.MethodGet, "http://"+b.d.HTTPAddr+"/v1/tenants/acme/sessions", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	etag := resp.Header.Get("ETag")
	req.Header.Set("If-None-Match", etag)
	if resp, err = http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match %s: %v %d, want 304", etag, err, resp.StatusCode)
	}
	if _, err := b.api.LogoutUser(ctx, "acme", "user-2", ""); err != nil {
		t.Fatal(err)
	}
	if resp, err = http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("after a change: %v %d, want 200", err, resp.StatusCode)
	}
	resp.Body.Close()
	if p := get("/v1/tenants/acme/sessions"); ids(p) != "s4,s3,s1,s0" {
		t.Errorf("after user-2's logout: %s", ids(p))
	}
	if _, err := b.api.LogoutTenant(ctx, "acme", ""); err != nil {
		t.Fatal(err)
	}
	if p := get("/v1/tenants/acme/sessions"); len(p.Items) != 0 || p.Total != 0 {
		t.Errorf("after the tenant's logout: %s total %d", ids(p), p.Total)
	}
}

// pos is a stream event's id: a position in the tenant's feed.
type pos struct{ tx, id int64 }

func (p pos) before(q pos) bool { return p.tx < q.tx || p.tx == q.tx && p.id < q.id }

func feedPos(t *testing.T, s string) pos {
	t.Helper()
	txs, ids, ok := strings.Cut(s, "-")
	tx, err1 := strconv.ParseInt(txs, 10, 64)
	id, err2 := strconv.ParseInt(ids, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("event id %q is not <tx>-<id>", s)
	}
	return pos{tx, id}
}

// TestSessionStreamWaitsForEarlierTransactions: a change whose transaction
// commits late takes a feed id smaller than changes already committed. The
// stream holds those back until it has ended, sends it first, and a client
// that resumes after it misses nothing: positions follow the transactions,
// not the ids. Also, a bare id (as streams sent before) still resumes.
func TestSessionStreamWaitsForEarlierTransactions(t *testing.T) {
	b := setup(t, 0)
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	pool := testenv.Pool(t, b.dbURL)
	stream, stop := openStream(t, b, "/v1/tenants/acme/sessions/stream", "")
	defer stop()

	// A transaction appends a change and stays open...
	slow, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Rollback(ctx) //nolint:errcheck // committed below
	if _, err := slow.Exec(ctx, `INSERT INTO session_changes (tenant_id, user_id, session_id, kind)
		VALUES ('acme', 'ann', 'ann-1', 'ended')`); err != nil {
		t.Fatal(err)
	}
	// ...while a registration commits a change with a larger id.
	b.register(t, "acme", "bob", "bob-1")
	select {
	case ev := <-stream:
		t.Fatalf("sent %s %v while an earlier transaction was still open", ev.kind, ev.data)
	case <-time.After(300 * time.Millisecond):
	}
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	first, second := next(t, stream), next(t, stream)
	if first.data["session_id"] != "ann-1" || second.data["session_id"] != "bob-1" {
		t.Fatalf("sent %v then %v; want ann-1 (the earlier transaction) then bob-1", first.data, second.data)
	}
	if a, b := first.data["id"].(float64), second.data["id"].(float64); a >= b {
		t.Fatalf("feed ids %v, %v: the late commit must hold the smaller id for this test to mean anything", a, b)
	}
	if !feedPos(t, first.id).before(feedPos(t, second.id)) {
		t.Errorf("positions %s, %s are not in the order sent", first.id, second.id)
	}

	for _, after := range []string{first.id, fmt.Sprint(int64(first.data["id"].(float64)))} {
		resumed, stop := openStream(t, b, "/v1/tenants/acme/sessions/stream", after)
		if ev := next(t, resumed); ev.data["session_id"] != "bob-1" || ev.id != second.id {
			t.Errorf("resumed after %s: got %s %v, want bob-1 at %s", after, ev.id, ev.data, second.id)
		}
		stop()
	}
}

// TestLastSeenHeartbeat: requests through a guard's middleware move the
// session's last_seen_at and put a "seen" change on the live feed, through
// one report per interval rather than one message per request.
func TestLastSeenHeartbeat(t *testing.T) {
	b := setup(t, 0)
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	g, _ := runGuard(t, b.d.NATSURL, "web-1")
	s := b.registerOn(t, "acme", "frank", "frank-1", "web", "web-1", nil)
	before, err := b.api.GetSession(ctx, "acme", "frank-1")
	if err != nil {
		t.Fatal(err)
	}
	stream, stop := openStream(t, b, "/v1/tenants/acme/users/frank/sessions/stream", "")
	defer stop()
	time.Sleep(300 * time.Millisecond) // past this evictd's 200 ms between "seen" changes

	h := g.Middleware(func(*http.Request) (guard.Session, bool) { return s, true })(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	for i := 0; i < 100; i++ {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	}
	ev := next(t, stream)
	if ev.kind != "seen" || ev.data["session_id"] != "frank-1" {
		t.Fatalf("event %s %v, want seen of frank-1", ev.kind, ev.data)
	}
	after, err := b.api.GetSession(ctx, "acme", "frank-1")
	if err != nil {
		t.Fatal(err)
	}
	if !after.LastSeenAt.After(before.LastSeenAt) {
		t.Errorf("last_seen_at %v did not move past %v", after.LastSeenAt, before.LastSeenAt)
	}
}

// TestHousekeeping: sessions a tenant-wide logout covered are marked revoked
// in the background (the logout itself stays O(1)) and still count as the
// operation's targets; history older than the retention is deleted.
func TestHousekeeping(t *testing.T) {
	b := setup(t, 0, func(c *evictd.Config) {
		c.Retention, c.TidyInterval = 2*time.Second, 100*time.Millisecond
	})
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	b.register(t, "acme", "gina", "g1")
	b.register(t, "acme", "hank", "h1")
	acc, err := b.api.LogoutTenant(ctx, "acme", "")
	if err != nil {
		t.Fatal(err)
	}
	pool := testenv.Pool(t, b.dbURL)
	testenv.Eventually(t, "sweep", func() bool {
		var n int
		return pool.QueryRow(ctx, "SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL AND revoke_operation = $1", acc.OperationID).Scan(&n) == nil && n == 2
	})
	s, err := b.api.GetSession(ctx, "acme", "g1")
	if err != nil || s.Status != "revoked" || s.RevokeCause != "tenant_logout" || s.RevokeOperation != acc.OperationID {
		t.Fatalf("swept session: %+v, %v", s, err)
	}
	op, err := b.api.Operation(ctx, acc.OperationID)
	if err != nil || op.TotalTargets != 2 {
		t.Fatalf("operation after the sweep: %d targets, %v; want 2", op.TotalTargets, err)
	}
	testenv.Eventually(t, "purge after the retention", func() bool {
		_, err := b.api.GetSession(ctx, "acme", "g1")
		return client.IsCode(err, "session_not_found")
	})
	var changesLeft int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM session_changes").Scan(&changesLeft); err != nil || changesLeft != 0 {
		t.Errorf("%d changes older than the retention left, %v", changesLeft, err)
	}
}
