package events_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/evict-dev/evict/events"
)

func TestStateSubjectRoundTrip(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("z", events.MaxIDLen)
	tests := []struct {
		name   string
		build  func() (string, error)
		want   string
		tenant string
		kind   string
		id     string
	}{
		{
			name:   "tenant",
			build:  func() (string, error) { return events.TenantStateSubject("acme") },
			want:   "evict.state.acme.tenant",
			tenant: "acme", kind: events.KindTenant,
		},
		{
			name:   "user",
			build:  func() (string, error) { return events.UserStateSubject("acme", "google-oauth2:1098@acme") },
			want:   "evict.state.acme.user.google-oauth2:1098@acme",
			tenant: "acme", kind: events.KindUser, id: "google-oauth2:1098@acme",
		},
		{
			name:   "session",
			build:  func() (string, error) { return events.SessionStateSubject("acme", "c2Vzc2lvbg==") },
			want:   "evict.state.acme.session.c2Vzc2lvbg==",
			tenant: "acme", kind: events.KindSession, id: "c2Vzc2lvbg==",
		},
		{
			name: "device",
			build: func() (string, error) {
				return events.DeviceStateSubject("acme", "ios-3F2504E0-4F89-11D3-9A0C-0305E82C3301")
			},
			want:   "evict.state.acme.device.ios-3F2504E0-4F89-11D3-9A0C-0305E82C3301",
			tenant: "acme", kind: events.KindDevice, id: "ios-3F2504E0-4F89-11D3-9A0C-0305E82C3301",
		},
		{
			// The trust watermark is per user, on its own kind: it never
			// replaces the user's session watermark on the state stream.
			name:   "trust",
			build:  func() (string, error) { return events.TrustStateSubject("acme", "google-oauth2:1098@acme") },
			want:   "evict.state.acme.trust.google-oauth2:1098@acme",
			tenant: "acme", kind: events.KindTrust, id: "google-oauth2:1098@acme",
		},
		{
			// A batch of user watermarks is named by its event id.
			name: "users",
			build: func() (string, error) {
				return events.UsersStateSubject("acme", "0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b0c")
			},
			want:   "evict.state.acme.users.0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b0c",
			tenant: "acme", kind: events.KindUsers, id: "0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b0c",
		},
		{
			name:   "longest identifiers",
			build:  func() (string, error) { return events.SessionStateSubject(long, long) },
			want:   "evict.state." + long + ".session." + long,
			tenant: long, kind: events.KindSession, id: long,
		},
		{
			// Identifiers may equal keywords: the position decides.
			name:   "tenant named like the heartbeat",
			build:  func() (string, error) { return events.TenantStateSubject("heartbeat") },
			want:   "evict.state.heartbeat.tenant",
			tenant: "heartbeat", kind: events.KindTenant,
		},
		{
			name:   "user named like a kind",
			build:  func() (string, error) { return events.UserStateSubject("tenant", "session") },
			want:   "evict.state.tenant.user.session",
			tenant: "tenant", kind: events.KindUser, id: "session",
		},
		{
			name:   "longest device",
			build:  func() (string, error) { return events.DeviceStateSubject(long, long) },
			want:   "evict.state." + long + ".device." + long,
			tenant: long, kind: events.KindDevice, id: long,
		},
		{
			name:   "device named like a kind",
			build:  func() (string, error) { return events.DeviceStateSubject("device", "trust") },
			want:   "evict.state.device.device.trust",
			tenant: "device", kind: events.KindDevice, id: "trust",
		},
		{
			name:   "trust of a user named like a kind",
			build:  func() (string, error) { return events.TrustStateSubject("trust", "device") },
			want:   "evict.state.trust.trust.device",
			tenant: "trust", kind: events.KindTrust, id: "device",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			subject, err := tc.build()
			if err != nil {
				t.Fatal(err)
			}
			if subject != tc.want {
				t.Fatalf("subject = %q, want %q", subject, tc.want)
			}
			tenant, kind, id, err := events.ParseStateSubject(subject)
			if err != nil {
				t.Fatalf("ParseStateSubject(%q): %v", subject, err)
			}
			if tenant != tc.tenant || kind != tc.kind || id != tc.id {
				t.Errorf("ParseStateSubject(%q) = %q, %q, %q; want %q, %q, %q", subject, tenant, kind, id, tc.tenant, tc.kind, tc.id)
			}
		})
	}
}

// TestSubjectBuildersRefuseInjection feeds identifiers that would add a
// token, a wildcard or an empty token to every builder.
func TestSubjectBuildersRefuseInjection(t *testing.T) {
	t.Parallel()
	hostile := []string{
		"",
		"acme.user.mallory",
		"acme.>",
		"*",
		">",
		".",
		"acme.",
		"acme corp",
		"acme\r\nPUB evict.state.x.tenant 0",
		"acme\x00",
		"\u0430cme",
		strings.Repeat("a", events.MaxIDLen+1),
	}
	builders := []struct {
		name  string
		build func(id string) (string, error)
	}{
		{"TenantStateSubject", events.TenantStateSubject},
		{"UserStateSubject tenant", func(id string) (string, error) { return events.UserStateSubject(id, "jane") }},
		{"UserStateSubject user", func(id string) (string, error) { return events.UserStateSubject("acme", id) }},
		{"SessionStateSubject tenant", func(id string) (string, error) { return events.SessionStateSubject(id, "s1") }},
		{"SessionStateSubject session", func(id string) (string, error) { return events.SessionStateSubject("acme", id) }},
		{"DeviceStateSubject tenant", func(id string) (string, error) { return events.DeviceStateSubject(id, "d1") }},
		{"DeviceStateSubject device", func(id string) (string, error) { return events.DeviceStateSubject("acme", id) }},
		{"TrustStateSubject tenant", func(id string) (string, error) { return events.TrustStateSubject(id, "jane") }},
		{"TrustStateSubject user", func(id string) (string, error) { return events.TrustStateSubject("acme", id) }},
		{"ReportSubject applied", func(id string) (string, error) { return events.ReportSubject("", id, "applied") }},
		{"ReportSubject session", func(id string) (string, error) { return events.ReportSubject("", id, "session") }},
		{"ReportSubject instance of a tenant", func(id string) (string, error) { return events.ReportSubject("acme", id, "seen") }},
		{"RPCSubject", func(id string) (string, error) { return events.RPCSubject(id, "register") }},
		{"TenantStateFilter", events.TenantStateFilter},
		{"EventSubject tenant", func(id string) (string, error) { return events.EventSubject(id, "member.removed") }},
	}
	for _, b := range builders {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			for _, id := range hostile {
				subject, err := b.build(id)
				if !errors.Is(err, events.ErrInvalidID) {
					t.Errorf("%q: err = %v, want ErrInvalidID", id, err)
				}
				if subject != "" {
					t.Errorf("%q: subject = %q, want none", id, subject)
				}
			}
		})
	}
}

func TestTenantStateFilter(t *testing.T) {
	t.Parallel()
	got, err := events.TenantStateFilter("acme")
	if err != nil {
		t.Fatal(err)
	}
	if want := "evict.state.acme.>"; got != want {
		t.Errorf("TenantStateFilter = %q, want %q", got, want)
	}
}

func TestEventSubject(t *testing.T) {
	t.Parallel()
	for typ, kind := range events.Types {
		if kind == "" {
			continue // a state event
		}
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			got, err := events.EventSubject("acme", kind)
			if err != nil {
				t.Fatal(err)
			}
			if want := events.EventsPrefix + "acme." + kind; got != want {
				t.Errorf("EventSubject = %q, want %q", got, want)
			}
			// evict.events.<tenant>.<noun>.<verb>: history consumers filter
			// on evict.events.<tenant>.> or evict.events.*.member.removed.
			if n := len(strings.Split(got, ".")); n != 5 {
				t.Errorf("%q has %d tokens, want 5", got, n)
			}
			// A history subject is never mistaken for state.
			if _, _, _, err := events.ParseStateSubject(got); err == nil {
				t.Errorf("ParseStateSubject(%q) succeeded", got)
			}
		})
	}
}

func TestParseStateSubjectRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		subject string
		invalid bool // the error wraps ErrInvalidID
	}{
		{"heartbeat", events.HeartbeatSubject, false},
		{"empty", "", false},
		{"prefix only", "evict.state.", false},
		{"prefix without dot", "evict.state", false},
		{"tenant only", "evict.state.acme", false},
		{"unknown kind", "evict.state.acme.group.finance", false},
		{"kind in upper case", "evict.state.acme.Tenant", false},
		{"tenant kind with an id", "evict.state.acme.tenant.x", false},
		{"user without id", "evict.state.acme.user", false},
		{"session without id", "evict.state.acme.session", false},
		{"device without id", "evict.state.acme.device", false},
		{"trust without id", "evict.state.acme.trust", false},
		{"users without id", "evict.state.acme.users", false},
		{"injected token after users", "evict.state.acme.users.b1.x", false},
		{"kind device in upper case", "evict.state.acme.Device.d1", false},
		{"injected token after device", "evict.state.acme.device.ios.1", false},
		{"injected token after trust", "evict.state.acme.trust.jane.doe", false},
		{"report subject", "evict.report.api-1.applied", false},
		{"injected token after user", "evict.state.acme.user.jane.doe", false},
		{"injected token after session", "evict.state.acme.session.s1.user", false},
		{"trailing dot", "evict.state.acme.tenant.", false},
		{"history subject", "evict.events.acme.member.removed", false},
		{"other root", "evict.stat.acme.tenant", false},
		{"prefix in upper case", "EVICT.STATE.acme.tenant", false},
		{"leading space", " evict.state.acme.tenant", false},
		{"trailing space", "evict.state.acme.tenant ", false},
		{"filter", "evict.state.acme.>", false},
		{"empty tenant", "evict.state..tenant", true},
		{"star tenant", "evict.state.*.tenant", true},
		{"gt tenant", "evict.state.>.user.jane", true},
		{"empty user", "evict.state.acme.user.", true},
		{"star user", "evict.state.acme.user.*", true},
		{"gt session", "evict.state.acme.session.>", true},
		{"empty device", "evict.state.acme.device.", true},
		{"star device", "evict.state.acme.device.*", true},
		{"gt trust user", "evict.state.acme.trust.>", true},
		{"star users batch", "evict.state.acme.users.*", true},
		{"Cyrillic trust user", "evict.state.acme.trust.j\u0430ne", true},
		{"space in user", "evict.state.acme.user.jane doe", true},
		{"NUL in session", "evict.state.acme.session.s\x00", true},
		{"Cyrillic tenant", "evict.state.\u0430cme.tenant", true},
		{"tenant of 129 bytes", "evict.state." + strings.Repeat("a", events.MaxIDLen+1) + ".tenant", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tenant, kind, id, err := events.ParseStateSubject(tc.subject)
			if err == nil {
				t.Fatalf("ParseStateSubject(%q) = %q, %q, %q; want an error", tc.subject, tenant, kind, id)
			}
			if tenant != "" || kind != "" || id != "" {
				t.Errorf("ParseStateSubject(%q) returned parts %q, %q, %q with its error", tc.subject, tenant, kind, id)
			}
			if got := errors.Is(err, events.ErrInvalidID); got != tc.invalid {
				t.Errorf("ParseStateSubject(%q) = %v; wraps ErrInvalidID: %v, want %v", tc.subject, err, got, tc.invalid)
			}
		})
	}
}

func TestReportSubject(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("z", events.MaxIDLen)
	tests := []struct {
		name     string
		tenant   string
		instance string
		kind     string
		want     string
	}{
		{"applied", "", "api-7d4b9c6f8-qx2mz-1-a3f9c1", "applied", "evict.report.api-7d4b9c6f8-qx2mz-1-a3f9c1.applied"},
		{"session", "", "api-7d4b9c6f8-qx2mz-1-a3f9c1", "session", "evict.report.api-7d4b9c6f8-qx2mz-1-a3f9c1.session"},
		{"longest instance", "", long, "applied", "evict.report." + long + ".applied"},
		{"instance named like a kind", "", "session", "applied", "evict.report.session.applied"},
		{"tenant applied", "acme", "api-1", "applied", "evict.report.acme.api-1.applied"},
		{"tenant seen", "acme", "api-1", "seen", "evict.report.acme.api-1.seen"},
		{"tenant named like a kind", "seen", "applied", "session", "evict.report.seen.applied.session"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := events.ReportSubject(tc.tenant, tc.instance, tc.kind)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("ReportSubject = %q, want %q", got, tc.want)
			}
			// evict subscribes to evict.report.> and splits the subject
			// back into tenant, instance and kind.
			tenant, instance, kind, err := events.ParseReportSubject(got)
			if err != nil {
				t.Fatalf("ParseReportSubject(%q): %v", got, err)
			}
			if tenant != tc.tenant || instance != tc.instance || kind != tc.kind {
				t.Errorf("%q splits into %q, %q, %q; want %q, %q, %q", got, tenant, instance, kind, tc.tenant, tc.instance, tc.kind)
			}
			// A report is never mistaken for state.
			if _, _, _, err := events.ParseStateSubject(got); err == nil {
				t.Errorf("ParseStateSubject(%q) succeeded", got)
			}
		})
	}
}

func TestParseReportSubjectRefuses(t *testing.T) {
	t.Parallel()
	for _, subject := range []string{
		"", "evict.report.", "evict.report.api-1", "evict.report.api-1.applied.x.y",
		"evict.report.api-1.state", "evict.report.acme.api-1.heartbeat", "evict.report.*.applied",
		"evict.report.acme.>.applied", "evict.report..api-1.applied", "evict.state.acme.tenant",
		"evict.report.acme.api 1.seen",
	} {
		if tenant, instance, kind, err := events.ParseReportSubject(subject); err == nil {
			t.Errorf("ParseReportSubject(%q) = %q, %q, %q; want an error", subject, tenant, instance, kind)
		}
	}
}

func TestRPCSubject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		tenant, op, want string
		ok               bool
	}{
		{"acme", "register", "evict.rpc.sessions.acme.register", true},
		{"acme", "end", "evict.rpc.sessions.acme.end", true},
		{"acme", "delete", "", false},
		{"acme.other", "register", "", false},
		{"*", "end", "", false},
		{"", "end", "", false},
	}
	for _, tc := range tests {
		got, err := events.RPCSubject(tc.tenant, tc.op)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("RPCSubject(%q, %q) = %q, %v; want %q, ok %v", tc.tenant, tc.op, got, err, tc.want, tc.ok)
		}
	}
}

func TestReportSubjectRefusesKinds(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"", "Applied", "SESSION", "heartbeat", "state", "applied.x", "session.>", "*", ">", "applied ", " session"} {
		subject, err := events.ReportSubject("", "api-1", kind)
		if err == nil {
			t.Errorf("ReportSubject(%q) = %q, want an error", kind, subject)
			continue
		}
		if subject != "" {
			t.Errorf("ReportSubject(%q) returned %q with its error", kind, subject)
		}
		if errors.Is(err, events.ErrInvalidID) {
			t.Errorf("ReportSubject(%q) = %v; the instance is valid, the kind is not", kind, err)
		}
	}
}
