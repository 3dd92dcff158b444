package events_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/evict-dev/evict/events"
)

func TestDecodeRevocationOfSampleEvents(t *testing.T) {
	t.Parallel()
	samples := sampleEvents(t)
	tests := []struct {
		typ  string
		want events.Revocation
		// subject is the state subject the event is published on.
		subject string
	}{
		{events.TypeTenantRevoked, events.Revocation{Kind: events.KindTenant, Tenant: "acme"},
			"evict.state.acme.tenant"},
		{events.TypeUserRevoked, events.Revocation{Kind: events.KindUser, Tenant: "acme", ID: "google-oauth2:109876543210@acme"},
			"evict.state.acme.user.google-oauth2:109876543210@acme"},
		{events.TypeSessionRevoked, events.Revocation{Kind: events.KindSession, Tenant: "acme", ID: "s_9f2c4e1a7b3d"},
			"evict.state.acme.session.s_9f2c4e1a7b3d"},
		// A device entry is keyed by the device alone (unique within the
		// tenant), not by its user.
		{events.TypeDeviceRevoked, events.Revocation{Kind: events.KindDevice, Tenant: "acme", ID: "ios-3F2504E0-4F89-11D3-9A0C-0305E82C3301"},
			"evict.state.acme.device.ios-3F2504E0-4F89-11D3-9A0C-0305E82C3301"},
		{events.TypeTrustRevoked, events.Revocation{Kind: events.KindTrust, Tenant: "acme", ID: "google-oauth2:109876543210@acme"},
			"evict.state.acme.trust.google-oauth2:109876543210@acme"},
	}
	for _, tc := range tests {
		t.Run(tc.typ, func(t *testing.T) {
			t.Parallel()
			b, err := json.Marshal(samples[tc.typ])
			if err != nil {
				t.Fatal(err)
			}
			got, err := events.DecodeRevocation(b)
			if err != nil {
				t.Fatal(err)
			}
			if got.Kind != tc.want.Kind || got.Tenant != tc.want.Tenant || got.ID != tc.want.ID {
				t.Errorf("Kind, Tenant, ID = %q, %q, %q; want %q, %q, %q", got.Kind, got.Tenant, got.ID, tc.want.Kind, tc.want.Tenant, tc.want.ID)
			}
			if !got.At.Equal(at) || !got.EventTime.Equal(at) {
				t.Errorf("At, EventTime = %v, %v; want %v", got.At, got.EventTime, at)
			}
			if got.OperationID != "0195a3c0-2b1d-7f3e-8a6b-1c2d3e4f5a6b" || got.EventID == "" {
				t.Errorf("OperationID, EventID = %q, %q", got.OperationID, got.EventID)
			}
			// A consumer compares this with the subject the message came on.
			if s := got.Subject(); s != tc.subject {
				t.Errorf("Subject() = %q, want %q", s, tc.subject)
			}
		})
	}
}

func TestDecodeRevocationSkipsOtherTypes(t *testing.T) {
	t.Parallel()
	samples := sampleEvents(t)
	// Guard reports are not state either: one that reached a state consumer
	// must be skipped too.
	for _, typ := range schemaTypes() {
		if kind, state := events.Types[typ]; state && kind == "" && typ != events.TypeHeartbeat {
			continue // a revocation
		}
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			b, err := json.Marshal(samples[typ])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := events.DecodeRevocation(b); !errors.Is(err, events.ErrUnknownType) {
				t.Errorf("err = %v, want ErrUnknownType", err)
			}
		})
	}
	t.Run("future type", func(t *testing.T) {
		t.Parallel()
		b := []byte(`{"type":"dev.evict.tenant.revoked.v2","data":{"tenant":"acme","not_before":"2026-03-14T09:26:53Z"}}`)
		if _, err := events.DecodeRevocation(b); !errors.Is(err, events.ErrUnknownType) {
			t.Errorf("err = %v, want ErrUnknownType", err)
		}
	})
}

func TestDecodeRevocationRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		json string
	}{
		{"not JSON", `dev.evict.tenant.revoked.v1`},
		{"array", `[]`},
		{"truncated", `{"type":"dev.evict.tenant.revoked.v1","data":{"tenant":"acme"`},
		{"no data", `{"type":"dev.evict.tenant.revoked.v1"}`},
		{"null data", `{"type":"dev.evict.tenant.revoked.v1","data":null}`},
		{"no tenant", `{"type":"dev.evict.tenant.revoked.v1","data":{"not_before":"2026-03-14T09:26:53Z"}}`},
		{"dot in tenant", `{"type":"dev.evict.tenant.revoked.v1","data":{"tenant":"acme.corp","not_before":"2026-03-14T09:26:53Z"}}`},
		{"wildcard tenant", `{"type":"dev.evict.tenant.revoked.v1","data":{"tenant":">","not_before":"2026-03-14T09:26:53Z"}}`},
		{"tenant as number", `{"type":"dev.evict.tenant.revoked.v1","data":{"tenant":42,"not_before":"2026-03-14T09:26:53Z"}}`},
		{"no not_before", `{"type":"dev.evict.tenant.revoked.v1","data":{"tenant":"acme"}}`},
		{"zero not_before", `{"type":"dev.evict.tenant.revoked.v1","data":{"tenant":"acme","not_before":"0001-01-01T00:00:00Z"}}`},
		{"null not_before", `{"type":"dev.evict.tenant.revoked.v1","data":{"tenant":"acme","not_before":null}}`},
		{"not_before without zone", `{"type":"dev.evict.tenant.revoked.v1","data":{"tenant":"acme","not_before":"2026-03-14T09:26:53"}}`},
		{"tenant event with revoked_at only", `{"type":"dev.evict.tenant.revoked.v1","data":{"tenant":"acme","revoked_at":"2026-03-14T09:26:53Z"}}`},
		{"no user", `{"type":"dev.evict.user.revoked.v1","data":{"tenant":"acme","not_before":"2026-03-14T09:26:53Z"}}`},
		{"star user", `{"type":"dev.evict.user.revoked.v1","data":{"tenant":"acme","user":"*","not_before":"2026-03-14T09:26:53Z"}}`},
		{"Cyrillic user", `{"type":"dev.evict.user.revoked.v1","data":{"tenant":"acme","user":"\u0430dmin","not_before":"2026-03-14T09:26:53Z"}}`},
		{"user event with session only", `{"type":"dev.evict.user.revoked.v1","data":{"tenant":"acme","session":"s1","not_before":"2026-03-14T09:26:53Z"}}`},
		{"no session", `{"type":"dev.evict.session.revoked.v1","data":{"tenant":"acme","user":"jane","revoked_at":"2026-03-14T09:26:53Z"}}`},
		{"session event with not_before only", `{"type":"dev.evict.session.revoked.v1","data":{"tenant":"acme","session":"s1","not_before":"2026-03-14T09:26:53Z"}}`},
		{"session with a dot", `{"type":"dev.evict.session.revoked.v1","data":{"tenant":"acme","session":"s.1","revoked_at":"2026-03-14T09:26:53Z"}}`},
		{"no device", `{"type":"dev.evict.device.revoked.v1","data":{"tenant":"acme","user":"jane","revoked_at":"2026-03-14T09:26:53Z"}}`},
		{"empty device", `{"type":"dev.evict.device.revoked.v1","data":{"tenant":"acme","user":"jane","device":"","revoked_at":"2026-03-14T09:26:53Z"}}`},
		{"device with a dot", `{"type":"dev.evict.device.revoked.v1","data":{"tenant":"acme","user":"jane","device":"ios.1","revoked_at":"2026-03-14T09:26:53Z"}}`},
		{"wildcard device", `{"type":"dev.evict.device.revoked.v1","data":{"tenant":"acme","user":"jane","device":">","revoked_at":"2026-03-14T09:26:53Z"}}`},
		{"device event with session only", `{"type":"dev.evict.device.revoked.v1","data":{"tenant":"acme","session":"s1","revoked_at":"2026-03-14T09:26:53Z"}}`},
		{"device event with not_before only", `{"type":"dev.evict.device.revoked.v1","data":{"tenant":"acme","user":"jane","device":"d1","not_before":"2026-03-14T09:26:53Z"}}`},
		{"zero revoked_at", `{"type":"dev.evict.device.revoked.v1","data":{"tenant":"acme","user":"jane","device":"d1","revoked_at":"0001-01-01T00:00:00Z"}}`},
		{"device with dot in tenant", `{"type":"dev.evict.device.revoked.v1","data":{"tenant":"acme.corp","user":"jane","device":"d1","revoked_at":"2026-03-14T09:26:53Z"}}`},
		{"no trust user", `{"type":"dev.evict.trust.revoked.v1","data":{"tenant":"acme","not_before":"2026-03-14T09:26:53Z"}}`},
		{"star trust user", `{"type":"dev.evict.trust.revoked.v1","data":{"tenant":"acme","user":"*","not_before":"2026-03-14T09:26:53Z"}}`},
		{"trust event with device only", `{"type":"dev.evict.trust.revoked.v1","data":{"tenant":"acme","device":"d1","not_before":"2026-03-14T09:26:53Z"}}`},
		{"trust event with revoked_at only", `{"type":"dev.evict.trust.revoked.v1","data":{"tenant":"acme","user":"jane","revoked_at":"2026-03-14T09:26:53Z"}}`},
		{"trust user as number", `{"type":"dev.evict.trust.revoked.v1","data":{"tenant":"acme","user":7,"not_before":"2026-03-14T09:26:53Z"}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := events.DecodeRevocation([]byte(tc.json))
			if err == nil {
				t.Fatalf("DecodeRevocation = %+v, want an error", r)
			}
			if errors.Is(err, events.ErrUnknownType) {
				t.Errorf("err = %v; a known type must not be skipped as unknown", err)
			}
			if r != (events.Revocation{}) {
				t.Errorf("DecodeRevocation returned %+v with its error", r)
			}
		})
	}
}

func TestDecodeUsersRevoked(t *testing.T) {
	t.Parallel()
	samples := sampleEvents(t)
	b, err := json.Marshal(samples[events.TypeUsersRevoked])
	if err != nil {
		t.Fatal(err)
	}
	u, err := events.DecodeUsersRevoked(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := "evict.state.acme.users.0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b0c"; u.Subject() != want {
		t.Errorf("Subject() = %q, want %q", u.Subject(), want)
	}
	if len(u.Users) != 2 || !u.NotBefore.Equal(at) || u.OperationID == "" || !u.EventTime.Equal(at) {
		t.Errorf("decoded %+v", u)
	}
	r, users, err := events.DecodeState(u.Subject(), b)
	want := events.Revocation{Kind: events.KindUsers, Tenant: "acme", At: u.NotBefore,
		OperationID: u.OperationID, EventID: u.EventID, EventTime: u.EventTime}
	if err != nil || r != want || len(users) != 2 || users[1] != "jane-doe@acme" {
		t.Errorf("DecodeState = %+v, %v, %v; want %+v, [… jane-doe@acme]", r, users, err, want)
	}
	// A guard that knows only the per-user type skips a batch, and a
	// batch decoder refuses everything else.
	if _, err := events.DecodeRevocation(b); !errors.Is(err, events.ErrUnknownType) {
		t.Errorf("DecodeRevocation of a batch: err = %v, want ErrUnknownType", err)
	}
	one, err := json.Marshal(samples[events.TypeUserRevoked])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.DecodeUsersRevoked(one); !errors.Is(err, events.ErrUnknownType) {
		t.Errorf("DecodeUsersRevoked of user.revoked: err = %v, want ErrUnknownType", err)
	}

	many := make([]string, events.MaxUsersPerEvent+1)
	for i := range many {
		many[i] = fmt.Sprintf("u%d", i)
	}
	tests := []struct {
		name   string
		change func(e map[string]any, d map[string]any)
	}{
		{"no users", func(_, d map[string]any) { d["users"] = []string{} }},
		{"users missing", func(_, d map[string]any) { delete(d, "users") }},
		{"too many users", func(_, d map[string]any) { d["users"] = many }},
		{"user with a dot", func(_, d map[string]any) { d["users"] = []string{"ok", "jane.doe"} }},
		{"user with a star", func(_, d map[string]any) { d["users"] = []string{"*"} }},
		{"user with a space", func(_, d map[string]any) { d["users"] = []string{"jane doe"} }},
		{"empty user", func(_, d map[string]any) { d["users"] = []string{""} }},
		{"user not a string", func(_, d map[string]any) { d["users"] = []any{42} }},
		{"tenant with gt", func(_, d map[string]any) { d["tenant"] = ">" }},
		{"tenant missing", func(_, d map[string]any) { delete(d, "tenant") }},
		{"not_before missing", func(_, d map[string]any) { delete(d, "not_before") }},
		{"not_before not a time", func(_, d map[string]any) { d["not_before"] = "yesterday" }},
		{"event id with a dot", func(e, _ map[string]any) { e["id"] = "a.b" }},
		{"event id missing", func(e, _ map[string]any) { delete(e, "id") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var e map[string]any
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatal(err)
			}
			tc.change(e, e["data"].(map[string]any))
			mb, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			if u, err := events.DecodeUsersRevoked(mb); err == nil {
				t.Errorf("accepted: %+v", u)
			}
		})
	}
	if _, err := events.DecodeUsersRevoked([]byte(`{"type":`)); err == nil {
		t.Error("accepted malformed JSON")
	}
}

// TestDecodeState: a state message decodes on its own subject only, a batch
// as its users, and a type this version does not know is ErrUnknownType.
func TestDecodeState(t *testing.T) {
	t.Parallel()
	samples := sampleEvents(t)
	enc := func(typ string) []byte {
		b, err := json.Marshal(samples[typ])
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	user, batch, heartbeat := enc(events.TypeUserRevoked), enc(events.TypeUsersRevoked), enc(events.TypeHeartbeat)
	tests := []struct {
		name    string
		subject string
		data    []byte
		kind    string // of the decoded revocation; "" when an error is wanted
		users   int
		want    error // wrapped by the error, when kind is ""
	}{
		{"user on its subject", "evict.state.acme.user.google-oauth2:109876543210@acme", user, events.KindUser, 0, nil},
		{"user on another user's subject", "evict.state.acme.user.jane", user, "", 0, events.ErrSubjectMismatch},
		{"user on another tenant's subject", "evict.state.globex.user.google-oauth2:109876543210@acme", user, "", 0, events.ErrSubjectMismatch},
		{"batch on its subject", "evict.state.acme.users.0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b0c", batch, events.KindUsers, 2, nil},
		{"batch on another batch's subject", "evict.state.acme.users.other", batch, "", 0, events.ErrSubjectMismatch},
		{"batch on another tenant's subject", "evict.state.globex.users.0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b0c", batch, "", 0, events.ErrSubjectMismatch},
		{"batch on a user's subject", "evict.state.acme.user.google-oauth2:109876543210@acme", batch, "", 0, events.ErrUnknownType},
		{"user on a batch's subject", "evict.state.acme.users.0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b0c", user, "", 0, events.ErrUnknownType},
		{"heartbeat", events.HeartbeatSubject, heartbeat, "", 0, events.ErrUnknownType},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, users, err := events.DecodeState(tc.subject, tc.data)
			if tc.kind == "" {
				if !errors.Is(err, tc.want) || r != (events.Revocation{}) || users != nil {
					t.Errorf("DecodeState = %+v, %v, %v; want nothing and %v", r, users, err, tc.want)
				}
				return
			}
			if err != nil || r.Kind != tc.kind || len(users) != tc.users {
				t.Errorf("DecodeState = %+v, %v, %v; want kind %s, %d users", r, users, err, tc.kind, tc.users)
			}
		})
	}
}
