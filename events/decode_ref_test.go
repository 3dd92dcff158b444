package events_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/evict-dev/evict/events"
)

// referenceDecode is DecodeRevocation written with encoding/json, as it
// was before the one-pass decoder: the behaviour the decoder must keep.
func referenceDecode(b []byte) (events.Revocation, error) {
	var e struct {
		ID   string          `json:"id"`
		Type string          `json:"type"`
		Time time.Time       `json:"time"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return events.Revocation{}, err
	}
	r := events.Revocation{EventID: e.ID, EventTime: e.Time}
	var err error
	switch e.Type {
	case events.TypeTenantRevoked:
		var d events.TenantRevoked
		err = json.Unmarshal(e.Data, &d)
		r.Kind, r.Tenant, r.At, r.OperationID = events.KindTenant, d.Tenant, d.NotBefore, d.OperationID
	case events.TypeUserRevoked:
		var d events.UserRevoked
		err = json.Unmarshal(e.Data, &d)
		r.Kind, r.Tenant, r.ID, r.At, r.OperationID = events.KindUser, d.Tenant, d.User, d.NotBefore, d.OperationID
	case events.TypeSessionRevoked:
		var d events.SessionRevoked
		err = json.Unmarshal(e.Data, &d)
		r.Kind, r.Tenant, r.ID, r.At, r.OperationID = events.KindSession, d.Tenant, d.Session, d.RevokedAt, d.OperationID
	case events.TypeDeviceRevoked:
		var d events.DeviceRevoked
		err = json.Unmarshal(e.Data, &d)
		r.Kind, r.Tenant, r.ID, r.At, r.OperationID = events.KindDevice, d.Tenant, d.Device, d.RevokedAt, d.OperationID
	case events.TypeTrustRevoked:
		var d events.TrustRevoked
		err = json.Unmarshal(e.Data, &d)
		r.Kind, r.Tenant, r.ID, r.At, r.OperationID = events.KindTrust, d.Tenant, d.User, d.NotBefore, d.OperationID
	default:
		return events.Revocation{}, fmt.Errorf("%w: %q", events.ErrUnknownType, e.Type)
	}
	if err != nil {
		return events.Revocation{}, err
	}
	if err := events.CheckID("tenant", r.Tenant); err != nil {
		return events.Revocation{}, err
	}
	if r.Kind != events.KindTenant {
		if err := events.CheckID(r.Kind, r.ID); err != nil {
			return events.Revocation{}, err
		}
	}
	if r.At.IsZero() {
		return events.Revocation{}, errors.New("missing timestamp")
	}
	return r, nil
}

// sameDecoding fails t when DecodeRevocation and referenceDecode disagree
// on b: both must refuse it (unknown type alike) or both return the same
// revocation.
func sameDecoding(t *testing.T, b []byte) {
	t.Helper()
	got, gerr := events.DecodeRevocation(b)
	want, werr := referenceDecode(b)
	switch {
	case (gerr == nil) != (werr == nil):
		t.Fatalf("%q: DecodeRevocation = %+v, %v; encoding/json = %+v, %v", b, got, gerr, want, werr)
	case errors.Is(gerr, events.ErrUnknownType) != errors.Is(werr, events.ErrUnknownType):
		t.Fatalf("%q: DecodeRevocation error %v, encoding/json error %v", b, gerr, werr)
	case gerr == nil && (got != want || got.At.Location().String() != want.At.Location().String()):
		t.Fatalf("%q: DecodeRevocation = %+v, encoding/json = %+v", b, got, want)
	}
}

func TestDecodeRevocationMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	const nb = `"2026-03-14T09:26:53.123456Z"`
	user := func(data string) string {
		return `{"id":"e1","type":"dev.evict.user.revoked.v1","time":` + nb + `,"data":` + data + `}`
	}
	inputs := []string{
		user(`{"tenant":"acme","user":"jane","not_before":` + nb + `,"operation_id":"op"}`),
		// Layout and order.
		" \n\t" + user(`{ "tenant" : "acme" , "user":"jane","not_before":`+nb+` }`) + "\r\n",
		`{"data":{"not_before":` + nb + `,"user":"jane","tenant":"acme"},"time":` + nb + `,"type":"dev.evict.user.revoked.v1","id":"e1"}`,
		// Keys: case-insensitive, last duplicate wins, escaped.
		user(`{"TENANT":"acme","User":"jane","NOT_BEFORE":` + nb + `}`),
		user(`{"tenant":"other","tenant":"acme","user":"jane","not_before":` + nb + `}`),
		user(`{"ten\u0061nt":"acme","user":"jane","not_before":` + nb + `}`),
		`{"TYPE":"dev.evict.user.revoked.v1","Data":{"tenant":"acme","user":"jane","not_before":` + nb + `}}`,
		`{"type":"dev.evict.user.revoked.v1","data":{"tenant":"x"},"data":{"tenant":"acme","user":"jane","not_before":` + nb + `}}`,
		// An earlier occurrence of a repeated key that does not decode
		// fails the event, though the last one is kept (found by fuzzing).
		`{"time":"","time":"0000-01-01T00:00:00Z"}`,
		`{"id":1,"id":"e1","type":"dev.evict.user.revoked.v1","time":` + nb + `,"data":{"tenant":"acme","user":"jane","not_before":` + nb + `}}`,
		user(`{"tenant":"acme","user":"jane","not_before":"yesterday","not_before":` + nb + `}`),
		user(`{"tenant":7,"TENANT":"acme","user":"jane","not_before":` + nb + `}`),
		user(`{"tenant":"acme","user":"jane","not_before":` + nb + `,"session":7,"session":"s"}`), // not a field of user.revoked
		// String values: escapes, non-ASCII, invalid UTF-8, null, wrong type.
		user(`{"tenant":"\u0061cme","user":"jane","not_before":` + nb + `}`),
		user(`{"tenant":"acme","user":"jane","not_before":` + nb + `,"operation_id":"op\u00e9\n\"x\"","reason":"caf\u00e9 \ud83d\ude00"}`),
		user(`{"tenant":"acme","user":"jane","not_before":` + nb + `,"operation_id":"op` + "\xff" + `"}`),
		user(`{"tenant":"acme","user":"jane","not_before":` + nb + `,"reason":null,"operation_id":null}`),
		user(`{"tenant":"acme","user":"jane","not_before":` + nb + `,"reason":42}`),
		user(`{"tenant":"acme","user":"jane","not_before":` + nb + `,"group":{"a":[1,2]}}`),
		user(`{"tenant":"acme","user":"jane","not_before":` + nb + `,"session":42}`), // not a field of user.revoked
		user(`{"tenant":"acme","user":"jane","not_before":` + nb + `,"extra":{"deep":[true,false,null,-0.5e+3,"s"]}}`),
		// Times.
		user(`{"tenant":"acme","user":"jane","not_before":"2026-03-14T10:26:53+01:00"}`),
		user(`{"tenant":"acme","user":"jane","not_before":"2026-03-14 09:26:53Z"}`),
		user(`{"tenant":"acme","user":"jane","not_before":1710408413}`),
		user(`{"tenant":"acme","user":"jane","not_before":null}`),
		`{"type":"dev.evict.user.revoked.v1","time":"yesterday","data":{"tenant":"acme","user":"jane","not_before":` + nb + `}}`,
		// Types and shapes.
		`{"type":"dev.evict.tenant.revoked.v1","data":{"tenant":"acme","not_before":` + nb + `,"user":42}}`,
		`{"type":"dev.evict.session.revoked.v1","data":{"tenant":"acme","session":"s1","user":42,"revoked_at":` + nb + `}}`,
		`{"type":"dev.evict.device.revoked.v1","data":{"tenant":"acme","device":"d1","user":"jane","revoked_at":` + nb + `,"cause":7}}`,
		`{"type":"dev.evict.trust.revoked.v1","data":{"tenant":"acme","user":"jane","not_before":` + nb + `}}`,
		`{"type":null,"data":{}}`, `{"type":7}`, `{"id":7,"type":"dev.evict.user.revoked.v1"}`, `null`, ` null `, `{}`, `[]`, `"x"`, `7`,
		user(`[]`), user(`"x"`), user(`null`), user(`{}`),
		// Syntax.
		``, ` `, `{`, `{"type"}`, `{"type":}`, `{"type":"a",}`, `{"type":"a"}}`, `{"type":"a"} x`, `{'type':'a'}`,
		user(`{"tenant":"acme","user":"jane","not_before":` + nb + `,"n":01}`),
		user(`{"tenant":"acme","user":"jane","not_before":` + nb + `,"n":1.}`),
		user(`{"tenant":"acme","user":"jane","not_before":` + nb + `,"n":-}`),
		user(`{"tenant":"acme","user":"jane","not_before":` + nb + `,"n":tru}`),
		user(`{"tenant":"acme","user":"jane","not_before":` + nb + `,"s":"\x"}`),
		user(`{"tenant":"acme","user":"jane","not_before":` + nb + `,"s":"\u12"}`),
		user(`{"tenant":"acme","user":"jane","not_before":` + nb + `,"s":"tab	inside"}`),
		user(`{"tenant":"acme","user":"jane","not_before":` + nb + `,"a":[1 2]}`),
		user(strings.Repeat("[", 10001) + strings.Repeat("]", 10001)),
		user(`{"tenant":"acme","user":"jane","not_before":` + nb + `,"a":` + strings.Repeat("[", 9990) + strings.Repeat("]", 9990) + `}`),
	}
	for _, in := range inputs {
		sameDecoding(t, []byte(in))
	}
	for typ, ev := range sampleEvents(t) {
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(typ, func(t *testing.T) { sameDecoding(t, b) })
	}
}

// BenchmarkDecodeRevocation compares the decoder with encoding/json on a
// user revocation as the relay publishes it.
func BenchmarkDecodeRevocation(b *testing.B) {
	nb := time.Now()
	msg, err := json.Marshal(events.New("0192f0c4-7d1e-7c3a-9b2e-5f1d2a3b4c5d", events.TypeUserRevoked, "tenant-01", "users/user-0000001", nb,
		events.UserRevoked{Tenant: "tenant-01", User: "user-0000001", NotBefore: nb, OperationID: "0192f0c4-7d1e-7c3a-9b2e-5f1d2a3b4c5e",
			Cause: events.CauseLogout}))
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		decode func([]byte) (events.Revocation, error)
	}{{"one-pass", events.DecodeRevocation}, {"encoding-json", referenceDecode}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.decode(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeUsersRevoked decodes a batch of the largest size, as a
// bulk logout publishes them: every guard decodes each one.
func BenchmarkDecodeUsersRevoked(b *testing.B) {
	nb := time.Now()
	users := make([]string, events.MaxUsersPerEvent)
	for i := range users {
		users[i] = fmt.Sprintf("bulk-user-%07d", i)
	}
	msg, err := json.Marshal(events.New("0192f0c4-7d1e-7c3a-9b2e-5f1d2a3b4c5d", events.TypeUsersRevoked, "tenant-01", "users", nb,
		events.UsersRevoked{Tenant: "tenant-01", Users: users, NotBefore: nb, OperationID: "0192f0c4-7d1e-7c3a-9b2e-5f1d2a3b4c5e",
			Cause: events.CauseLogout}))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := events.DecodeUsersRevoked(msg); err != nil {
			b.Fatal(err)
		}
	}
}
