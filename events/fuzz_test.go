package events_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/evict-dev/evict/events"
)

// The seed corpora are in testdata/fuzz/<FuzzName>; `go test` runs them as
// regression tests.

// identifierSchemas compiles the identifier definition of every schema,
// report types included.
func identifierSchemas(t testing.TB) map[string]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	schemas := make(map[string]*jsonschema.Schema, len(events.Types)+len(reportTypes))
	for _, typ := range schemaTypes() {
		sch, err := c.Compile(filepath.Join(schemaDir, typ+".json") + "#/$defs/identifier")
		if err != nil {
			t.Fatal(err)
		}
		schemas[typ] = sch
	}
	return schemas
}

// FuzzCheckID checks that an accepted identifier is exactly one subject
// token in every subject built from it, that a refused one is refused by
// every builder, and that the schemas' identifier pattern agrees.
func FuzzCheckID(f *testing.F) {
	idSchemas := identifierSchemas(f)
	f.Fuzz(func(t *testing.T, id string) {
		err := events.CheckID("tenant", id)
		if valid := events.ValidID(id); valid != (err == nil) {
			t.Fatalf("ValidID(%q) = %v but CheckID = %v", id, valid, err)
		}
		for typ, sch := range idSchemas {
			if schemaOK := sch.Validate(id) == nil; schemaOK != (err == nil) {
				t.Fatalf("%s: the schema's identifier pattern says %v for %q, CheckID says %v", typ, schemaOK, id, err)
			}
		}
		if err != nil {
			if !errors.Is(err, events.ErrInvalidID) {
				t.Fatalf("CheckID(%q) = %v, want it to wrap ErrInvalidID", id, err)
			}
			for name, build := range map[string]func() (string, error){
				"TenantStateSubject":  func() (string, error) { return events.TenantStateSubject(id) },
				"UserStateSubject":    func() (string, error) { return events.UserStateSubject("acme", id) },
				"SessionStateSubject": func() (string, error) { return events.SessionStateSubject(id, "s1") },
				"DeviceStateSubject":  func() (string, error) { return events.DeviceStateSubject("acme", id) },
				"TrustStateSubject":   func() (string, error) { return events.TrustStateSubject(id, "jane") },
				"ReportSubject":       func() (string, error) { return events.ReportSubject("", id, "applied") },
				"RPCSubject":          func() (string, error) { return events.RPCSubject(id, "end") },
				"TenantStateFilter":   func() (string, error) { return events.TenantStateFilter(id) },
				"EventSubject":        func() (string, error) { return events.EventSubject(id, "member.removed") },
			} {
				if s, err := build(); err == nil || s != "" {
					t.Fatalf("%s accepts refused identifier %q: %q", name, id, s)
				}
			}
			return
		}

		if len(id) < 1 || len(id) > events.MaxIDLen {
			t.Fatalf("accepted %q of %d bytes", id, len(id))
		}
		if strings.ContainsAny(id, ".*>") {
			t.Fatalf("accepted %q with a subject separator or wildcard", id)
		}
		for _, r := range id {
			if r >= utf8.RuneSelf || unicode.IsSpace(r) || unicode.IsControl(r) {
				t.Fatalf("accepted %q with %U", id, r)
			}
		}

		for _, c := range []struct {
			build  func() (string, error)
			tokens int
			kind   string // expected from ParseStateSubject; empty: not a state subject
			id     string
		}{
			{func() (string, error) { return events.TenantStateSubject(id) }, 4, events.KindTenant, ""},
			{func() (string, error) { return events.UserStateSubject(id, id) }, 5, events.KindUser, id},
			{func() (string, error) { return events.SessionStateSubject(id, id) }, 5, events.KindSession, id},
			{func() (string, error) { return events.DeviceStateSubject(id, id) }, 5, events.KindDevice, id},
			{func() (string, error) { return events.TrustStateSubject(id, id) }, 5, events.KindTrust, id},
			{func() (string, error) { return events.ReportSubject("", id, "applied") }, 4, "", ""},
			{func() (string, error) { return events.ReportSubject("", id, "session") }, 4, "", ""},
			{func() (string, error) { return events.ReportSubject(id, id, "seen") }, 5, "", ""},
			{func() (string, error) { return events.RPCSubject(id, "register") }, 5, "", ""},
			{func() (string, error) { return events.TenantStateFilter(id) }, 4, "", ""},
			{func() (string, error) { return events.EventSubject(id, "member.removed") }, 5, "", ""},
		} {
			s, err := c.build()
			if err != nil {
				t.Fatalf("valid identifier %q refused: %v", id, err)
			}
			if got := len(strings.Split(s, ".")); got != c.tokens {
				t.Fatalf("%q has %d tokens, want %d", s, got, c.tokens)
			}
			if c.kind == "" {
				continue
			}
			tenant, kind, gotID, err := events.ParseStateSubject(s)
			if err != nil || tenant != id || kind != c.kind || gotID != c.id {
				t.Fatalf("ParseStateSubject(%q) = %q, %q, %q, %v; want %q, %q, %q", s, tenant, kind, gotID, err, id, c.kind, c.id)
			}
		}
	})
}

// FuzzParseStateSubject checks that whatever ParseStateSubject accepts is
// made of valid parts and is exactly what the builders produce from them.
func FuzzParseStateSubject(f *testing.F) {
	f.Fuzz(func(t *testing.T, subject string) {
		tenant, kind, id, err := events.ParseStateSubject(subject)
		if err != nil {
			if tenant != "" || kind != "" || id != "" {
				t.Fatalf("ParseStateSubject(%q) returned parts %q, %q, %q with error %v", subject, tenant, kind, id, err)
			}
			return
		}
		if subject == events.HeartbeatSubject {
			t.Fatal("the heartbeat subject parsed as a state subject")
		}
		if !events.ValidID(tenant) {
			t.Fatalf("ParseStateSubject(%q): invalid tenant %q", subject, tenant)
		}
		var rebuilt string
		switch kind {
		case events.KindTenant:
			if id != "" {
				t.Fatalf("ParseStateSubject(%q): tenant kind with id %q", subject, id)
			}
			rebuilt, err = events.TenantStateSubject(tenant)
		case events.KindUser:
			rebuilt, err = events.UserStateSubject(tenant, id)
		case events.KindSession:
			rebuilt, err = events.SessionStateSubject(tenant, id)
		case events.KindDevice:
			rebuilt, err = events.DeviceStateSubject(tenant, id)
		case events.KindTrust:
			rebuilt, err = events.TrustStateSubject(tenant, id)
		default:
			t.Fatalf("ParseStateSubject(%q): unknown kind %q", subject, kind)
		}
		if err != nil {
			t.Fatalf("ParseStateSubject(%q) = %q, %q, %q, which the builders refuse: %v", subject, tenant, kind, id, err)
		}
		if rebuilt != subject {
			t.Fatalf("ParseStateSubject(%q) = %q, %q, %q, which builds %q", subject, tenant, kind, id, rebuilt)
		}
	})
}

// FuzzDecodeRevocation checks that DecodeRevocation never returns an entry
// a guard could not store under a valid state subject, and that it decodes
// exactly as encoding/json would.
func FuzzDecodeRevocation(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		sameDecoding(t, b)
		r, err := events.DecodeRevocation(b)
		if err != nil {
			if r != (events.Revocation{}) {
				t.Fatalf("DecodeRevocation returned %+v with error %v", r, err)
			}
			return
		}
		if !events.ValidID(r.Tenant) {
			t.Fatalf("invalid tenant %q", r.Tenant)
		}
		if r.At.IsZero() {
			t.Fatalf("zero At in %+v", r)
		}
		var subject string
		switch r.Kind {
		case events.KindTenant:
			if r.ID != "" {
				t.Fatalf("tenant revocation with ID %q", r.ID)
			}
			subject, err = events.TenantStateSubject(r.Tenant)
		case events.KindUser:
			subject, err = events.UserStateSubject(r.Tenant, r.ID)
		case events.KindSession:
			subject, err = events.SessionStateSubject(r.Tenant, r.ID)
		case events.KindDevice:
			subject, err = events.DeviceStateSubject(r.Tenant, r.ID)
		case events.KindTrust:
			subject, err = events.TrustStateSubject(r.Tenant, r.ID)
		default:
			t.Fatalf("unknown kind %q", r.Kind)
		}
		if err != nil {
			t.Fatalf("%+v has no state subject: %v", r, err)
		}
		if tenant, kind, id, err := events.ParseStateSubject(subject); err != nil || tenant != r.Tenant || kind != r.Kind || id != r.ID {
			t.Fatalf("%+v: subject %q parses as %q, %q, %q, %v", r, subject, tenant, kind, id, err)
		}
		if got := r.Subject(); got != subject {
			t.Fatalf("%+v: Subject() = %q, want %q", r, got, subject)
		}
	})
}
