package events

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// usersSeeds are users.revoked events as evict writes them and near
// misses that only encoding/json may decide.
func usersSeeds(t testing.TB) [][]byte {
	t.Helper()
	at := time.Date(2026, 11, 25, 2, 30, 0, 123456789, time.UTC)
	canonical, err := json.Marshal(New("0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b0c", TypeUsersRevoked, "acme", "users", at,
		UsersRevoked{Tenant: "acme", Users: []string{"jane", "google-oauth2:1098@acme", "b10"}, NotBefore: at,
			OperationID: "0195a3c1-7e2f-7b6a-9c41-5d8e2f0a1b0d", Cause: CauseLogout, Group: "site-1", Reason: "left"}))
	if err != nil {
		t.Fatal(err)
	}
	seeds := [][]byte{canonical}
	for _, s := range []string{
		`{"type":"dev.evict.users.revoked.v1","data":{"tenant":"acme","users":[ "a" , "b" ],"not_before":"2026-11-25T02:30:00Z"}}`,
		`{"type":"dev.evict.users.revoked.v1","data":{"tenant":"acme","users":["a\u0062"],"not_before":"2026-11-25T02:30:00Z"}}`,
		`{"type":"dev.evict.users.revoked.v1","data":{"tenant":"acme","users":["jané"],"not_before":"2026-11-25T02:30:00Z"}}`,
		`{"type":"dev.evict.users.revoked.v1","data":{"tenant":"acme","users":["a",null],"not_before":"2026-11-25T02:30:00Z"}}`,
		`{"type":"dev.evict.users.revoked.v1","data":{"tenant":"acme","users":["a",1],"not_before":"2026-11-25T02:30:00Z"}}`,
		`{"type":"dev.evict.users.revoked.v1","data":{"tenant":"acme","users":"a","not_before":"2026-11-25T02:30:00Z"}}`,
		`{"type":"dev.evict.users.revoked.v1","data":{"Tenant":"acme","tenant":"x","users":["a"],"not_before":"2026-11-25T02:30:00Z"}}`,
		`{"type":"dev.evict.users.revoked.v1","data":{"tenant":"acme","tenant":"x","users":["a"]}}`,
		`{"type":"dev.evict.users.revoked.v1","type":"x","data":{"tenant":"acme","users":["a"]}}`,
		`{"type":"dev.evict.users.revoked.v1","data":{"tenan\u0074":"acme","users":["a"],"not_before":null}}`,
		`{"type":"dev.evict.users.revoked.v1","time":"yesterday","data":{"tenant":"acme","users":["a"]}}`,
		`{"type":"dev.evict.users.revoked.v1","specversion":1,"data":{"tenant":"acme","users":["a"]}}`,
		`{"type":"dev.evict.users.revoked.v1","extra":{"a":[1,2]},"data":{"tenant":"acme","users":["a"]}}`,
		`{"type":"dev.evict.users.revoked.v1","data":null}`,
		`{"type":"dev.evict.users.revoked.v1","data":[]}`,
		`{"type":"dev.evict.users.revoked.v1","data":{"users":[]}} x`,
		`null`,
		`{"data":{"users":["a"`,
	} {
		seeds = append(seeds, []byte(s))
	}
	return seeds
}

// TestDecodeUsersPlainTakesEvictsEvents checks that an event as evict
// encodes it takes the one-pass way, with every field, and that the near
// misses that one way must leave to encoding/json are left to it.
func TestDecodeUsersPlainTakesEvictsEvents(t *testing.T) {
	t.Parallel()
	seeds := usersSeeds(t)
	got, ok := decodeUsersPlain(seeds[0])
	if !ok {
		t.Fatalf("evict's own event went to encoding/json: %s", seeds[0])
	}
	var want Event[UsersRevoked]
	if err := json.Unmarshal(seeds[0], &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decodeUsersPlain = %+v, want %+v", got, want)
	}
	if _, ok := decodeUsersPlain(seeds[1]); !ok {
		t.Errorf("white space in the users' array sent it to encoding/json: %s", seeds[1])
	}
	for i, s := range seeds[2:] {
		if _, ok := decodeUsersPlain(s); ok {
			t.Errorf("seed %d decoded in one pass, but is for encoding/json: %s", i+2, s)
		}
	}
}

// FuzzDecodeUsersRevoked checks that whatever decodeUsersPlain decodes,
// encoding/json decodes to the same event, so that DecodeUsersRevoked
// accepts and refuses exactly what it did with encoding/json alone.
func FuzzDecodeUsersRevoked(f *testing.F) {
	for _, s := range usersSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := decodeUsersPlain(b)
		if !ok {
			if !reflect.DeepEqual(got, Event[UsersRevoked]{}) {
				t.Fatalf("%q: refused with %+v", b, got)
			}
			return
		}
		var want Event[UsersRevoked]
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("%q: decoded in one pass as %+v, but encoding/json refuses it: %v", b, got, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: one pass %s, encoding/json %s", b, show(got), show(want))
		}
	})
}

func show(ev Event[UsersRevoked]) string { return fmt.Sprintf("%#v", ev) }
