package events_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/evict-dev/evict/events"
)

// schemaDir holds the JSON Schema of every event type, one file per type.
const schemaDir = "schemas"

// reportTypes are the types guards report to evict on core NATS. They are
// not in events.Types (no stream carries them) but have schemas, samples and
// doc examples like every other type.
var reportTypes = []string{events.TypeGuardApplied, events.TypeSessionTermination, events.TypeSessionsSeen}

// at is the time of the sample events. The nanoseconds make sure the
// schemas accept the fractional seconds Go writes.
var at = time.Date(2026, 3, 14, 9, 26, 53, 123456789, time.UTC)

// sampleEvents returns a realistic event of every type in events.Types and
// of every report type, built the way a producer builds it.
func sampleEvents(t *testing.T) map[string]any {
	t.Helper()
	const (
		tenant  = "acme"
		user    = "google-oauth2:109876543210@acme"
		session = "s_9f2c4e1a7b3d"
		group   = "finance~eu"
		device  = "ios-3F2504E0-4F89-11D3-9A0C-0305E82C3301"
		op      = "0195a3c0-2b1d-7f3e-8a6b-1c2d3e4f5a6b"
		// instance is a guard's default name: host, process id and a
		// random suffix.
		instance = "api-7d4b9c6f8-qx2mz-1-a3f9c1"
	)
	issued := at.Add(-3 * time.Hour)
	// Ids are UUIDv7 as evict makes them; the CloudEvents subject is
	// "tenant", "users/<user>", "sessions/<session>" or "devices/<device>".
	// The relay publishes the heartbeat, which belongs to no tenant, with
	// source "/relay" and no subject.
	heartbeat := events.New("0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b04", events.TypeHeartbeat, "", "", at,
		events.Heartbeat{Instance: "relay-6f9c7d-x2lkq"})
	heartbeat.Source = "/relay"
	// A guard sends its reports with source "/guards/<instance>" and no
	// subject; started_at is on the guard's clock, in its local zone.
	applied := events.New("0195a3c1-9a3e-7c1d-8e52-6f9a3b1c2d01", events.TypeGuardApplied, "", "", at,
		events.GuardApplied{Instance: instance, Tenants: []string{tenant, "globex"}, AppliedSeq: 48213, Ready: true,
			StartedAt: time.Date(2026, 3, 13, 8, 2, 11, 482913407, time.FixedZone("CET", 3600))})
	applied.Source = "/guards/" + instance
	termination := events.New("0195a3c1-9a3e-7c1d-8e52-6f9a3b1c2d02", events.TypeSessionTermination, tenant, "", at,
		events.SessionTermination{Instance: instance, Tenant: tenant, User: user, Session: session,
			State: events.TerminationTerminated, InFlight: 0, OperationID: op, TimedOut: true})
	termination.Source = "/guards/" + instance
	seen := events.New("0195a3c1-9a3e-7c1d-8e52-6f9a3b1c2d04", events.TypeSessionsSeen, "", "", at,
		events.SessionsSeen{Instance: instance, Sessions: []events.SeenSession{{Tenant: tenant, Session: session}, {Tenant: "globex", Session: "s_1"}}})
	seen.Source = "/guards/" + instance
	return map[string]any{
		events.TypeTenantRevoked: events.New("0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b01", events.TypeTenantRevoked, tenant,
			"tenant", at,
			events.TenantRevoked{Tenant: tenant, NotBefore: at, OperationID: op, Cause: events.CauseTenantLogout, Reason: "suspected credential leak"}),
		events.TypeUserRevoked: events.New("0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b02", events.TypeUserRevoked, tenant,
			"users/"+user, at,
			events.UserRevoked{Tenant: tenant, User: user, NotBefore: at, OperationID: op, Cause: events.CauseMemberRemoved, Group: group, Reason: "left the finance team"}),
		events.TypeSessionRevoked: events.New("0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b03", events.TypeSessionRevoked, tenant,
			"sessions/"+session, at,
			events.SessionRevoked{Tenant: tenant, Session: session, User: user, RevokedAt: at, OperationID: op, Cause: events.CauseLogout, Reason: "lost laptop"}),
		events.TypeDeviceRevoked: events.New("0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b0a", events.TypeDeviceRevoked, tenant,
			"devices/"+device, at,
			events.DeviceRevoked{Tenant: tenant, User: user, Device: device, RevokedAt: at, OperationID: op, Reason: "phone reported stolen"}),
		events.TypeTrustRevoked: events.New("0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b0b", events.TypeTrustRevoked, tenant,
			"users/"+user, at,
			events.TrustRevoked{Tenant: tenant, User: user, NotBefore: at, OperationID: op, Reason: "password reset after phishing"}),
		events.TypeUsersRevoked: events.New("0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b0c", events.TypeUsersRevoked, tenant,
			"users", at,
			events.UsersRevoked{Tenant: tenant, Users: []string{user, "jane-doe@acme"}, NotBefore: at, OperationID: op,
				Cause: events.CauseMemberRemoved, Group: group, Reason: "finance team disbanded"}),
		events.TypeHeartbeat: heartbeat,
		events.TypeMemberAdded: events.New("0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b05", events.TypeMemberAdded, tenant,
			"users/"+user, at,
			events.Membership{Tenant: tenant, Group: group, User: user, OperationID: op, Reason: "joined the finance team"}),
		events.TypeMemberRemoved: events.New("0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b06", events.TypeMemberRemoved, tenant,
			"users/"+user, at,
			events.Membership{Tenant: tenant, Group: group, User: user, OperationID: op}),
		events.TypeAccessChanged: events.New("0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b07", events.TypeAccessChanged, tenant,
			"users/"+user, at,
			events.AccessChanged{Tenant: tenant, User: user, OperationID: op, Reason: "role admin -> viewer"}),
		events.TypeSessionRegistered: events.New("0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b08", events.TypeSessionRegistered, tenant,
			"sessions/"+session, at,
			events.SessionLifecycle{Tenant: tenant, Session: session, User: user, Client: "web", IssuedAt: issued}),
		events.TypeSessionEnded: events.New("0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b09", events.TypeSessionEnded, tenant,
			"sessions/"+session, at,
			events.SessionLifecycle{Tenant: tenant, Session: session, User: user, Client: "web", IssuedAt: issued}),
		events.TypeGuardApplied:       applied,
		events.TypeSessionTermination: termination,
		events.TypeSessionsSeen:       seen,
	}
}

// sortedTypes returns the keys of events.Types in a stable order.
func sortedTypes() []string {
	types := make([]string, 0, len(events.Types))
	for typ := range events.Types {
		types = append(types, typ)
	}
	slices.Sort(types)
	return types
}

// schemaTypes returns every type that has a schema: the types of
// events.Types, then the report types.
func schemaTypes() []string {
	return append(sortedTypes(), reportTypes...)
}

// compileSchemas compiles the schema of every type, asserting formats such
// as date-time (an annotation only by default in draft 2020-12).
func compileSchemas(t testing.TB) map[string]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	schemas := make(map[string]*jsonschema.Schema, len(events.Types)+len(reportTypes))
	for _, typ := range schemaTypes() {
		sch, err := c.Compile(filepath.Join(schemaDir, typ+".json"))
		if err != nil {
			t.Fatalf("compile schema of %s: %v", typ, err)
		}
		schemas[typ] = sch
	}
	return schemas
}

// readSchema returns the raw schema document of typ.
func readSchema(t *testing.T, typ string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(schemaDir, typ+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", typ, err)
	}
	return doc
}

// toInstance turns v into the generic form the validator expects.
func toInstance(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

func TestSchemaForEveryType(t *testing.T) {
	t.Parallel()
	entries, err := os.ReadDir(schemaDir)
	if err != nil {
		t.Fatal(err)
	}
	files := make(map[string]bool)
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() {
			t.Errorf("%s/%s: only <type>.json files belong here", schemaDir, e.Name())
			continue
		}
		files[name] = true
		if _, known := events.Types[name]; !known && !slices.Contains(reportTypes, name) {
			t.Errorf("%s/%s: no such type in events.Types or the report types", schemaDir, e.Name())
		}
	}
	for _, typ := range reportTypes {
		if _, ok := events.Types[typ]; ok {
			t.Errorf("report type %s is in events.Types, but no stream carries reports", typ)
		}
	}
	for _, typ := range schemaTypes() {
		if !files[typ] {
			t.Errorf("type %s has no schema %s/%s.json", typ, schemaDir, typ)
		}
	}
}

func TestSchemaHeader(t *testing.T) {
	t.Parallel()
	for _, typ := range schemaTypes() {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			doc := readSchema(t, typ)
			if got, want := doc["$schema"], "https://json-schema.org/draft/2020-12/schema"; got != want {
				t.Errorf("$schema = %v, want %s", got, want)
			}
			if got, want := doc["$id"], "https://evict.dev/schemas/"+typ+".json"; got != want {
				t.Errorf("$id = %v, want %s", got, want)
			}
			props := doc["properties"].(map[string]any)
			if got := props["type"].(map[string]any)["const"]; got != typ {
				t.Errorf("properties.type.const = %v, want %s", got, typ)
			}
		})
	}
}

// TestSchemaDataMatchesGoType keeps the schemas and the Go data types in
// step: the same field names, and a field is required exactly when the Go
// type always writes it (no omitempty).
func TestSchemaDataMatchesGoType(t *testing.T) {
	t.Parallel()
	samples := sampleEvents(t)
	for _, typ := range schemaTypes() {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			sample, ok := samples[typ]
			if !ok {
				t.Fatalf("no sample event for %s", typ)
			}
			dataType := reflect.ValueOf(sample).FieldByName("Data").Type()
			var goFields, goRequired []string
			for f := range dataType.Fields() {
				name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
				goFields = append(goFields, name)
				if !strings.Contains(opts, "omitempty") {
					goRequired = append(goRequired, name)
				}
			}

			data := readSchema(t, typ)["properties"].(map[string]any)["data"].(map[string]any)
			var schemaFields, schemaRequired []string
			for name := range data["properties"].(map[string]any) {
				schemaFields = append(schemaFields, name)
			}
			for _, name := range data["required"].([]any) {
				schemaRequired = append(schemaRequired, name.(string))
			}
			if _, closed := data["additionalProperties"]; closed {
				t.Error("data has additionalProperties; consumers must accept new optional fields")
			}

			for _, s := range [][]string{goFields, goRequired, schemaFields, schemaRequired} {
				slices.Sort(s)
			}
			if !slices.Equal(goFields, schemaFields) {
				t.Errorf("data fields: Go %s has %v, schema has %v", dataType, goFields, schemaFields)
			}
			if !slices.Equal(goRequired, schemaRequired) {
				t.Errorf("required data fields: Go %s has %v, schema has %v", dataType, goRequired, schemaRequired)
			}
		})
	}
}

func TestSchemaAcceptsSampleEvents(t *testing.T) {
	t.Parallel()
	schemas := compileSchemas(t)
	samples := sampleEvents(t)
	for _, typ := range schemaTypes() {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			if err := schemas[typ].Validate(toInstance(t, samples[typ])); err != nil {
				t.Errorf("schema refuses an event built with events.New:\n%v", err)
			}
		})
	}
}

// TestSchemaMutations changes one thing in each sample event and checks the
// schema's verdict. A mutation returns false when it does not apply to an
// event (the heartbeat has no tenant, a guard report no tenant source); each
// must apply to at least one type.
func TestSchemaMutations(t *testing.T) {
	t.Parallel()
	type event = map[string]any

	set := func(key string, v any) func(event) bool {
		return func(e event) bool { e[key] = v; return true }
	}
	del := func(key string) func(event) bool {
		return func(e event) bool { delete(e, key); return true }
	}
	// setData replaces a data field the sample has.
	setData := func(key string, v any) func(event) bool {
		return func(e event) bool {
			d := e["data"].(event)
			if _, ok := d[key]; !ok {
				return false
			}
			d[key] = v
			return true
		}
	}
	delData := func(key string) func(event) bool {
		return func(e event) bool {
			d := e["data"].(event)
			if _, ok := d[key]; !ok {
				return false
			}
			delete(d, key)
			return true
		}
	}
	isReport := func(e event) bool { return slices.Contains(reportTypes, e["type"].(string)) }
	onTenantSource := func(mutate func(event) bool) func(event) bool {
		return func(e event) bool {
			return e["type"] != events.TypeHeartbeat && !isReport(e) && mutate(e)
		}
	}
	onReport := func(mutate func(event) bool) func(event) bool {
		return func(e event) bool { return isReport(e) && mutate(e) }
	}
	// on and except restrict a mutation to, or exclude, types whose
	// verdict differs (a field required in one type is optional in another).
	on := func(typ string, mutate func(event) bool) func(event) bool {
		return func(e event) bool { return e["type"] == typ && mutate(e) }
	}
	except := func(typ string, mutate func(event) bool) func(event) bool {
		return func(e event) bool { return e["type"] != typ && mutate(e) }
	}

	tests := []struct {
		name   string
		mutate func(event) bool
		valid  bool
	}{
		// What later releases of a v1 type may add must stay valid.
		{"new optional data field", func(e event) bool { e["data"].(event)["region"] = "eu-west-1"; return true }, true},
		{"new extension attribute", set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), true},
		{"report for every tenant", delData("tenants"), true},
		{"termination without operation", on(events.TypeSessionTermination, delData("operation_id")), true},
		{"termination not timed out", on(events.TypeSessionTermination, delData("timed_out")), true},
		{"deferred termination", on(events.TypeSessionTermination, func(e event) bool {
			d := e["data"].(event)
			d["state"], d["in_flight"] = events.TerminationDeferred, 2
			delete(d, "timed_out")
			return true
		}), true},
		{"no subject", del("subject"), true},
		{"time with offset", set("time", "2026-03-14T10:26:53+01:00"), true},

		{"wrong type constant", func(e event) bool {
			if e["type"] == events.TypeUserRevoked {
				e["type"] = events.TypeTenantRevoked
			} else {
				e["type"] = events.TypeUserRevoked
			}
			return true
		}, false},
		{"next version of the type", func(e event) bool {
			e["type"] = strings.TrimSuffix(e["type"].(string), ".v1") + ".v2"
			return true
		}, false},
		{"specversion 0.3", set("specversion", "0.3"), false},
		{"datacontenttype text/plain", set("datacontenttype", "text/plain"), false},
		{"missing specversion", del("specversion"), false},
		{"missing id", del("id"), false},
		{"empty id", set("id", ""), false},
		{"missing source", del("source"), false},
		{"missing type", del("type"), false},
		{"missing time", del("time"), false},
		{"missing data", del("data"), false},
		{"null data", set("data", nil), false},
		{"data is a string", set("data", `{"tenant":"acme"}`), false},
		{"empty subject", set("subject", ""), false},
		{"time without zone", set("time", "2026-03-14T09:26:53"), false},
		{"time with a space", set("time", "2026-03-14 09:26:53Z"), false},
		{"time as unix seconds", set("time", 1773480413), false},
		{"time with lower-case t", set("time", "2026-03-14t09:26:53Z"), false},
		{"time on a leap second", set("time", "2026-12-31T23:59:60Z"), false},
		{"time on 30 February", set("time", "2026-02-30T09:26:53Z"), false},

		{"dot in source tenant", onTenantSource(set("source", "/tenants/acme.corp")), false},
		{"source of another form", onTenantSource(set("source", "https://acme.example/")), false},
		{"tenant source on a report", onReport(set("source", "/tenants/acme")), false},
		{"dot in source instance", onReport(set("source", "/guards/api-1.eu")), false},
		{"source of a guard without instance", onReport(set("source", "/guards/")), false},
		{"dot in tenant", setData("tenant", "acme.corp"), false},
		{"dot in user", setData("user", "jane.doe"), false},
		{"dot in group", setData("group", "finance.eu"), false},
		{"dot in session", setData("session", "s.1"), false},
		{"star user", setData("user", "*"), false},
		{"gt session", setData("session", ">"), false},
		{"dot in device", setData("device", "ios.3F2504E0"), false},
		{"star device", setData("device", "*"), false},
		{"dot in instance", onReport(setData("instance", "api-1.eu")), false},
		{"gt instance", onReport(setData("instance", ">")), false},
		{"dot in a report tenant", setData("tenants", []any{"acme", "globex.eu"}), false},
		{"tenants as one string", setData("tenants", "acme,globex"), false},
		{"space in tenant", setData("tenant", "acme corp"), false},
		{"newline after tenant", setData("tenant", "acme\n"), false},
		{"NUL in user", setData("user", "jane\x00"), false},
		{"empty tenant", setData("tenant", ""), false},
		{"tenant of 129 bytes", setData("tenant", strings.Repeat("a", 129)), false},
		{"Cyrillic a in tenant", setData("tenant", "\u0430cme"), false},
		{"full-width user", setData("user", "\uff4aane"), false},
		{"percent-encoded dot", setData("user", "jane%2Edoe"), false},
		{"slash in session", setData("session", "s/1"), false},
		{"tenant as number", setData("tenant", 42), false},
		{"empty operation_id", setData("operation_id", ""), false},
		{"empty cause", setData("cause", ""), false},
		{"not_before without zone", setData("not_before", "2026-03-14T09:26:53"), false},
		{"revoked_at as unix seconds", setData("revoked_at", 1773480413), false},
		{"issued_at null", setData("issued_at", nil), false},
		{"reason as number", setData("reason", 1), false},
		{"client as object", setData("client", map[string]any{"name": "web"}), false},
		{"empty instance", setData("instance", ""), false},
		{"negative applied_seq", setData("applied_seq", -1), false},
		{"fractional applied_seq", setData("applied_seq", 48213.5), false},
		{"applied_seq as string", setData("applied_seq", "48213"), false},
		{"ready as string", setData("ready", "true"), false},
		{"started_at without zone", setData("started_at", "2026-03-13T08:02:11"), false},
		{"unknown termination state", setData("state", "killed"), false},
		{"termination state in upper case", setData("state", "TERMINATED"), false},
		{"negative in_flight", setData("in_flight", -1), false},
		{"in_flight as string", setData("in_flight", "0"), false},
		{"timed_out as string", setData("timed_out", "true"), false},
		{"missing data tenant", delData("tenant"), false},
		// operation_id is optional in a termination report only.
		{"missing data operation_id", except(events.TypeSessionTermination, delData("operation_id")), false},
		{"missing data device", delData("device"), false},
		{"missing data user", except(events.TypeSessionRevoked, delData("user")), false},
		{"missing data revoked_at", delData("revoked_at"), false},
		{"missing data state", delData("state"), false},
		{"missing data not_before", delData("not_before"), false},
		{"missing data session", delData("session"), false},
	}

	schemas := compileSchemas(t)
	samples := sampleEvents(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			applied := 0
			for _, typ := range schemaTypes() {
				e := toInstance(t, samples[typ]).(event)
				if !tc.mutate(e) {
					continue
				}
				applied++
				err := schemas[typ].Validate(toInstance(t, e))
				switch {
				case tc.valid && err != nil:
					t.Errorf("%s: schema refuses it:\n%v", typ, err)
				case !tc.valid && err == nil:
					t.Errorf("%s: schema accepts it", typ)
				}
			}
			if applied == 0 {
				t.Fatal("the mutation applies to no event type")
			}
		})
	}
}

// TestSchemaRequiresWhatGoAlwaysWrites removes, one at a time, every
// attribute and data field a producer always writes; the schema must then
// refuse the event, so consumers can rely on them.
func TestSchemaRequiresWhatGoAlwaysWrites(t *testing.T) {
	t.Parallel()
	schemas := compileSchemas(t)
	samples := sampleEvents(t)
	for _, typ := range schemaTypes() {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			sample := reflect.ValueOf(samples[typ])
			for _, path := range alwaysWritten(sample.Type()) {
				e := toInstance(t, samples[typ]).(map[string]any)
				obj := e
				for _, key := range path[:len(path)-1] {
					obj = obj[key].(map[string]any)
				}
				delete(obj, path[len(path)-1])
				if err := schemas[typ].Validate(toInstance(t, e)); err == nil {
					t.Errorf("schema accepts the event without %s", strings.Join(path, "."))
				}
			}
		})
	}
}

// alwaysWritten returns the JSON paths of the fields of the struct type t,
// and of its Data field, that are not omitempty.
func alwaysWritten(t reflect.Type) [][]string {
	var paths [][]string
	for f := range t.Fields() {
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if strings.Contains(opts, "omitempty") {
			continue
		}
		paths = append(paths, []string{name})
		if f.Name == "Data" {
			for _, sub := range alwaysWritten(f.Type) {
				paths = append(paths, append([]string{name}, sub...))
			}
		}
	}
	return paths
}
