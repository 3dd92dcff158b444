package evictd_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/evict-dev/evict/internal/testenv"
)

// untouched is everything a refused request must leave untouched.
type untouched struct {
	rows map[string]int
	// msgs maps each tenant subject of both streams to its message count
	// and the sequence of its last message.
	msgs map[string][2]uint64
}

func takeSnapshot(t *testing.T, b *bundle) untouched {
	t.Helper()
	ctx := context.Background()
	pool := testenv.Pool(t, b.dbURL)
	s := untouched{rows: map[string]int{}, msgs: map[string][2]uint64{}}
	for _, table := range []string{"tenants", "group_members", "user_watermarks", "sessions", "operations", "audit_log", "outbox"} {
		var n int
		query := "SELECT count(*) FROM " + table
		if table == "audit_log" {
			query += " WHERE action <> 'denied'" // refusals are audited, by design
		}
		if err := pool.QueryRow(ctx, query).Scan(&n); err != nil {
			t.Fatal(err)
		}
		s.rows[table] = n
	}
	js := b.serviceJS(t) // stream inspection is beyond a guard's permissions
	for _, name := range []string{"EVICT_STATE", "EVICT_EVENTS"} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		// Tenant subjects only: the relay's heartbeat keeps ticking.
		info, err := st.Info(ctx, jetstream.WithSubjectFilter("evict.*.*.>"))
		if err != nil {
			t.Fatal(err)
		}
		for subj, n := range info.State.Subjects {
			m, err := st.GetLastMsgForSubject(ctx, subj)
			if err != nil {
				t.Fatal(err)
			}
			s.msgs[subj] = [2]uint64{n, m.Sequence}
		}
	}
	return s
}

func TestBadRequestsChangeNothing(t *testing.T) {
	b := setup(t, 0)
	ctx := context.Background()
	if _, err := b.api.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.api.AddMember(ctx, "acme", "site", "alice"); err != nil {
		t.Fatal(err)
	}
	b.register(t, "acme", "alice", "s1")
	b.waitPublished(t)
	before := takeSnapshot(t, b)

	big := `{"users":["` + strings.Repeat("a", 17<<20) + `"]}`
	manyUsers := `{"users":[` + strings.TrimSuffix(strings.Repeat(`"u",`, 100_001), ",") + `]}`
	tests := []struct {
		name, method, path, body, contentType, auth string
		want                                        int
		wantCode                                    string
	}{
		{"no token", "POST", "/v1/tenants/acme/users/alice/logout", "", "", "-", 401, "unauthorized"},
		{"wrong token", "POST", "/v1/tenants/acme/users/alice/logout", "", "", "Bearer nope", 401, "unauthorized"},
		{"basic auth", "POST", "/v1/tenants/acme/users/alice/logout", "", "", "Basic dGVzdDp0ZXN0", 401, "unauthorized"},
		{"unknown tenant", "POST", "/v1/tenants/nope/users/alice/logout", "", "", "", 404, "tenant_not_found"},
		{"unknown tenant, bulk", "POST", "/v1/tenants/nope/logout", `{"all":true}`, "", "", 404, "tenant_not_found"},
		{"dot in user", "POST", "/v1/tenants/acme/users/a.b/logout", "", "", "", 400, "invalid_identifier"},
		{"encoded dot in user", "POST", "/v1/tenants/acme/users/a%2Eb/logout", "", "", "", 400, "invalid_identifier"},
		{"star in tenant", "POST", "/v1/tenants/ac*me/users/alice/logout", "", "", "", 400, "invalid_identifier"},
		{"gt in group", "DELETE", "/v1/tenants/acme/groups/%3E/members/alice", "", "", "", 400, "invalid_identifier"},
		{"space in session", "POST", "/v1/tenants/acme/sessions/a%20b/logout", "", "", "", 400, "invalid_identifier"},
		{"tab in user", "POST", "/v1/tenants/acme/users/a%09b/logout", "", "", "", 400, "invalid_identifier"},
		{"cyrillic look-alike", "POST", "/v1/tenants/acme/users/%D0%B0lice/logout", "", "", "", 400, "invalid_identifier"},
		{"over-long user", "POST", "/v1/tenants/acme/users/" + strings.Repeat("x", 129) + "/logout", "", "", "", 400, "invalid_identifier"},
		{"bad user in bulk", "POST", "/v1/tenants/acme/logout", `{"users":["ok","evil.>"]}`, "", "", 400, "invalid_identifier"},
		{"empty user in bulk", "POST", "/v1/tenants/acme/logout", `{"users":[""]}`, "", "", 400, "invalid_identifier"},
		{"bad user in set", "PUT", "/v1/tenants/acme/groups/site/members", `{"users":["a b"]}`, "", "", 400, "invalid_identifier"},
		{"malformed JSON", "POST", "/v1/tenants/acme/logout", `{"users":[`, "", "", 400, "malformed_json"},
		{"trailing data", "POST", "/v1/tenants/acme/logout", `{"all":true} {"all":true}`, "", "", 400, "malformed_json"},
		{"unknown field", "POST", "/v1/tenants/acme/logout", `{"user":["alice"]}`, "", "", 400, "malformed_json"},
		{"wrong type", "POST", "/v1/tenants/acme/logout", `{"users":"alice"}`, "", "", 400, "malformed_json"},
		{"empty body", "POST", "/v1/tenants/acme/logout", ``, "", "", 400, "malformed_json"},
		{"neither users nor all", "POST", "/v1/tenants/acme/logout", `{}`, "", "", 400, "bad_request"},
		{"both users and all", "POST", "/v1/tenants/acme/logout", `{"users":["a"],"all":true}`, "", "", 400, "bad_request"},
		{"set without users", "PUT", "/v1/tenants/acme/groups/site/members", `{}`, "", "", 400, "bad_request"},
		{"form content type", "POST", "/v1/tenants/acme/logout", `all=true`, "application/x-www-form-urlencoded", "", 415, "unsupported_media_type"},
		{"body too large", "POST", "/v1/tenants/acme/logout", big, "", "", 413, "body_too_large"},
		{"too many users", "POST", "/v1/tenants/acme/logout", manyUsers, "", "", 413, "body_too_large"},
		{"long reason", "POST", "/v1/tenants/acme/users/alice/logout", `{"reason":"` + strings.Repeat("r", 1025) + `"}`, "", "", 400, "bad_request"},
		{"not a member", "DELETE", "/v1/tenants/acme/groups/site/members/bob", "", "", "", 404, "member_not_found"},
		{"unknown session", "POST", "/v1/tenants/acme/sessions/nope/logout", "", "", "", 404, "session_not_found"},
		{"session of another user", "POST", "/v1/tenants/acme/sessions", `{"session_id":"s1","user_id":"mallory","client":"web"}`, "", "", 409, "conflict"},
		{"bad client kind", "POST", "/v1/tenants/acme/sessions", `{"session_id":"s2","user_id":"bob","client":"Web App"}`, "", "", 400, "bad_request"},
		{"bad operation id", "GET", "/v1/operations/not-a-uuid", "", "", "", 400, "bad_request"},
		{"unknown operation", "GET", "/v1/operations/0192f7a0-0000-7000-8000-000000000000", "", "", "", 404, "operation_not_found"},
		{"unknown route", "POST", "/v1/tenants/acme/explode", "", "", "", 404, "not_found"},
		{"wrong method", "PATCH", "/v1/tenants/acme/logout", "", "", "", 405, "method_not_allowed"},
		// JSON that encoding/json alone would accept.
		{"duplicated key", "POST", "/v1/tenants/acme/logout", `{"users":["alice"],"users":[]}`, "", "", 400, "malformed_json"},
		{"duplicated key in registration", "POST", "/v1/tenants/acme/sessions", `{"session_id":"x1","user_id":"bob","user_id":"alice","client":"web"}`, "", "", 400, "malformed_json"},
		{"deeply nested", "POST", "/v1/tenants/acme/logout", `{"users":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`, "", "", 400, "malformed_json"},
		{"null users", "POST", "/v1/tenants/acme/logout", `{"users":null}`, "", "", 400, "bad_request"},
		{"number as a user", "POST", "/v1/tenants/acme/logout", `{"users":[42]}`, "", "", 400, "malformed_json"},
		{"object as a user", "POST", "/v1/tenants/acme/logout", `{"users":[{"id":"a"}]}`, "", "", 400, "malformed_json"},
		{"all as a string", "POST", "/v1/tenants/acme/logout", `{"all":"true"}`, "", "", 400, "malformed_json"},
		{"array body", "POST", "/v1/tenants/acme/logout", `["alice"]`, "", "", 400, "malformed_json"},
		{"string body", "POST", "/v1/tenants/acme/logout", `"all"`, "", "", 400, "malformed_json"},
		{"invalid UTF-8", "POST", "/v1/tenants/acme/logout", "{\"users\":[\"\xff\xfe\"]}", "", "", 400, "invalid_identifier"},
		{"BOM", "POST", "/v1/tenants/acme/logout", "\ufeff{\"all\":true}", "", "", 400, "malformed_json"},
		{"text/plain", "POST", "/v1/tenants/acme/logout", `{"all":true}`, "text/plain", "", 415, "unsupported_media_type"},
		{"XML", "POST", "/v1/tenants/acme/logout", `<all/>`, "application/xml", "", 415, "unsupported_media_type"},
		{"multipart", "POST", "/v1/tenants/acme/logout", `--x`, "multipart/form-data; boundary=x", "", 415, "unsupported_media_type"},
		{"malformed content type", "POST", "/v1/tenants/acme/logout", `{"all":true}`, "application/", "", 415, "unsupported_media_type"},
		{"unknown registration field", "POST", "/v1/tenants/acme/sessions", `{"session_id":"x2","user_id":"bob","client":"web","admin":true}`, "", "", 400, "malformed_json"},
		{"registration without user", "POST", "/v1/tenants/acme/sessions", `{"session_id":"x3","client":"web"}`, "", "", 400, "invalid_identifier"},
		{"registration with a dotted holder", "POST", "/v1/tenants/acme/sessions", `{"session_id":"x4","user_id":"bob","client":"web","holder":"a.b"}`, "", "", 400, "invalid_identifier"},
		{"push provider unknown", "POST", "/v1/tenants/acme/sessions", `{"session_id":"x5","user_id":"bob","client":"mobile","push":{"provider":"sms","token":"t"}}`, "", "", 400, "bad_request"},
		{"push token with a space", "POST", "/v1/tenants/acme/sessions", `{"session_id":"x6","user_id":"bob","client":"mobile","push":{"provider":"apns","token":"a b"}}`, "", "", 400, "bad_request"},
		{"push token empty", "POST", "/v1/tenants/acme/sessions", `{"session_id":"x7","user_id":"bob","client":"mobile","push":{"provider":"apns","token":""}}`, "", "", 400, "bad_request"},
		{"issued_at not a time", "POST", "/v1/tenants/acme/sessions", `{"session_id":"x8","user_id":"bob","client":"web","issued_at":"yesterday"}`, "", "", 400, "malformed_json"},
		{"over-long device label", "POST", "/v1/tenants/acme/users/alice/trusted-devices", `{"device_id":"d1","label":"` + strings.Repeat("l", 600) + `"}`, "", "", 400, "bad_request"},
		{"dotted device", "POST", "/v1/tenants/acme/users/alice/trusted-devices", `{"device_id":"d.1"}`, "", "", 400, "invalid_identifier"},
		{"idempotency key too long", "POST", "/v1/tenants/acme/users/alice/logout", "", "", "idem:" + strings.Repeat("k", 300), 400, "bad_request"},
		{"wait too long", "GET", "/v1/operations/0192f7a0-0000-7000-8000-000000000000?wait=5m", "", "", "", 400, "bad_request"},
		{"limit zero", "GET", "/v1/tenants/acme/sessions?limit=0", "", "", "", 400, "bad_request"},
		{"limit huge", "GET", "/v1/tenants/acme/sessions?limit=100000", "", "", "", 400, "bad_request"},
		{"bad cursor", "GET", "/v1/tenants/acme/sessions?cursor=!!!", "", "", "", 400, "bad_request"},
		{"bad sort", "GET", "/v1/tenants/acme/sessions?sort=user_id", "", "", "", 400, "bad_request"},
		{"bad search prefix", "GET", "/v1/tenants/acme/sessions?q=a.b", "", "", "", 400, "invalid_identifier"},
		{"bad client filter", "GET", "/v1/tenants/acme/sessions?client=Web%20App", "", "", "", 400, "bad_request"},
		{"bad Last-Event-ID", "GET", "/v1/tenants/acme/sessions/stream?last_event_id=-4", "", "", "", 400, "bad_request"},
		{"bad audit time", "GET", "/v1/tenants/acme/audit?since=yesterday", "", "", "", 400, "bad_request"},
		{"bad audit before", "GET", "/v1/tenants/acme/audit?before=x", "", "", "", 400, "bad_request"},
		{"unknown tenant listing", "GET", "/v1/tenants/nope/sessions", "", "", "", 404, "tenant_not_found"},
		{"unknown tenant stream", "GET", "/v1/tenants/nope/sessions/stream", "", "", "", 404, "tenant_not_found"},
		{"unknown tenant set", "PUT", "/v1/tenants/nope/groups/g/members", `{"users":[]}`, "", "", 404, "tenant_not_found"},
		{"unknown tenant registration", "POST", "/v1/tenants/nope/sessions", `{"session_id":"x9","user_id":"bob","client":"web"}`, "", "", 404, "tenant_not_found"},
	}
	// Every identifier position, with every kind of identifier that could
	// break out of a NATS subject token or fool an admin.
	hostileIDs := map[string]string{
		"dot": "a.b", "star": "a*", "gt": "%3E", "space": "a%20b", "tab": "a%09b", "newline": "a%0Ab", "NUL": "a%00b",
		"DEL": "a%7Fb", "cyrillic": "%D0%B0cme", "fullwidth": "%EF%BD%81cme", "over-long": strings.Repeat("x", 129),
		"percent": "a%25b", "slash": "a%2Fb",
	}
	templates := map[string][2]string{
		"tenant":  {"POST", "/v1/tenants/%s/users/alice/logout"},
		"group":   {"DELETE", "/v1/tenants/acme/groups/%s/members/alice"},
		"user":    {"POST", "/v1/tenants/acme/users/%s/access-changed"},
		"session": {"POST", "/v1/tenants/acme/sessions/%s/logout"},
		"device":  {"DELETE", "/v1/tenants/acme/users/alice/trusted-devices/%s"},
	}
	for pos, tpl := range templates {
		for kind, id := range hostileIDs {
			tests = append(tests, struct {
				name, method, path, body, contentType, auth string
				want                                        int
				wantCode                                    string
			}{pos + " with " + kind, tpl[0], fmt.Sprintf(tpl[1], id), "", "", "", 400, "invalid_identifier"})
		}
	}
	if len(tests) < 100 {
		t.Fatalf("only %d hostile requests", len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			req, _ := http.NewRequest(tt.method, "http://"+b.d.HTTPAddr+tt.path, body)
			switch {
			case tt.auth == "":
				req.Header.Set("Authorization", "Bearer "+token)
			case tt.auth == "-":
			case strings.HasPrefix(tt.auth, "idem:"):
				req.Header.Set("Authorization", "Bearer "+token)
				req.Header.Set("Idempotency-Key", strings.TrimPrefix(tt.auth, "idem:"))
			default:
				req.Header.Set("Authorization", tt.auth)
			}
			ct := tt.contentType
			if ct == "" && tt.body != "" {
				ct = "application/json"
			}
			if ct != "" {
				req.Header.Set("Content-Type", ct)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want || !strings.Contains(string(got), `"error":"`+tt.wantCode+`"`) {
				t.Errorf("%s %s: %d %s; want %d %s", tt.method, tt.path, resp.StatusCode, got, tt.want, tt.wantCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("content type %q, want application/problem+json", ct)
			}
		})
	}
	b.waitPublished(t)
	takeSnapshot(t, b).mustEqual(t, before)
}

// mustEqual fails t unless after, taken once refused requests are done,
// holds what before held.
func (after untouched) mustEqual(t *testing.T, before untouched) {
	t.Helper()
	for table, n := range before.rows {
		if after.rows[table] != n {
			t.Errorf("table %s: %d rows before, %d after refused requests", table, n, after.rows[table])
		}
	}
	if len(before.msgs) == 0 {
		t.Fatal("the fixture published nothing; the stream check would be empty")
	}
	if fmt.Sprint(before.msgs) != fmt.Sprint(after.msgs) {
		t.Errorf("streams changed:\nbefore %v\nafter  %v", before.msgs, after.msgs)
	}
}
