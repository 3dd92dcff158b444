package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/evict-dev/evict/events"
)

// write is a snapshot of h's header and entries.
func write(t testing.TB, h Header, entries ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := w.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	at := time.Unix(1_790_000_000, 123456789)
	entries := []Entry{
		{Kind: events.KindTenant, Tenant: "acme", At: at},
		{Kind: events.KindUser, Tenant: "acme", ID: "bob", At: at.Add(time.Second)},
		{Kind: events.KindSession, Tenant: "globex", ID: strings.Repeat("s", maxID), At: at},
		{Kind: events.KindDevice, Tenant: "acme", ID: "phone-1", At: time.Unix(0, 0)},
		{Kind: events.KindTrust, Tenant: "acme", ID: "bob", At: at.Add(-time.Hour)},
	}
	h := Header{Seq: 42, StreamCreated: at, Entries: uint64(len(entries))}
	got, each, err := ReadHeader(bytes.NewReader(write(t, h, entries...)))
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != h.Seq || !got.StreamCreated.Equal(h.StreamCreated) || got.Entries != h.Entries {
		t.Fatalf("header %+v, want %+v", got, h)
	}
	var read []Entry
	if err := each(func(e Entry) error { read = append(read, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(read) != len(entries) {
		t.Fatalf("read %d entries, want %d", len(read), len(entries))
	}
	for i := range entries {
		if r, e := read[i], entries[i]; r.Kind != e.Kind || r.Tenant != e.Tenant || r.ID != e.ID || !r.At.Equal(e.At) {
			t.Errorf("entry %d = %+v, want %+v", i, r, e)
		}
	}
}

func TestCountKinds(t *testing.T) {
	e := func(kind, id string) Entry { return Entry{Kind: kind, Tenant: "acme", ID: id, At: time.Unix(9, 0)} }
	tests := []struct {
		name    string
		entries []Entry
		want    map[string]int
	}{
		{"none", nil, map[string]int{}},
		{"one kind", []Entry{e(events.KindUser, "a"), e(events.KindUser, "b")}, map[string]int{events.KindUser: 2}},
		{"every kind", []Entry{
			e(events.KindTenant, ""), e(events.KindUser, "a"), e(events.KindSession, strings.Repeat("s", maxID)),
			e(events.KindSession, "s2"), e(events.KindDevice, "d"), e(events.KindTrust, "a"), e(events.KindUser, "b"),
		}, map[string]int{events.KindTenant: 1, events.KindUser: 2, events.KindSession: 2, events.KindDevice: 1, events.KindTrust: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := Header{Seq: 3, StreamCreated: time.Unix(1, 0), Entries: uint64(len(tt.entries))}
			got, err := CountKinds(write(t, h, tt.entries...))
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("CountKinds = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestBadInput: whatever is not a whole snapshot of this version fails with
// ErrFormat, at the header or while reading the entries.
func TestBadInput(t *testing.T) {
	valid := func(n uint64, entries ...Entry) []byte {
		return write(t, Header{Seq: 7, StreamCreated: time.Unix(1, 0), Entries: n}, entries...)
	}
	bob := Entry{Kind: events.KindUser, Tenant: "acme", ID: "bob", At: time.Unix(5, 0)}
	whole := valid(1, bob)
	tests := []struct {
		name  string
		input []byte
	}{
		{"empty", nil},
		{"other magic", append([]byte("evict-snapshot-2\n"), whole[len(magic):]...)},
		{"header cut", whole[:len(magic)+1]},
		{"entry cut", whole[:len(whole)-2]},
		{"fewer entries than the header", valid(2, bob)},
		{"more entries than the header", valid(0, bob)},
		{"unknown kind", append(valid(1), 9, 1, 'a', 1, 'b', 2)},
		{"string too long", binary.AppendUvarint(append(valid(1), 2), maxID+1)},
	}
	// CountKinds steps over the entries without the header's count.
	counted := map[string]bool{"fewer entries than the header": true, "more entries than the header": true}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := CountKinds(tt.input); counted[tt.name] != (err == nil) || err != nil && !errors.Is(err, ErrFormat) {
				t.Errorf("CountKinds: err = %v, want ErrFormat: %v", err, !counted[tt.name])
			}
			_, each, err := ReadHeader(bytes.NewReader(tt.input))
			if err == nil {
				err = each(func(Entry) error { return nil })
			}
			if !errors.Is(err, ErrFormat) {
				t.Errorf("err = %v, want ErrFormat", err)
			}
		})
	}
}

func TestWriterRefuses(t *testing.T) {
	tests := []Entry{
		{Kind: events.KindUsers, Tenant: "acme", ID: "bob"}, // a batch is one entry per user
		{Kind: events.KindUser, Tenant: strings.Repeat("t", maxID+1), ID: "bob"},
		{Kind: events.KindUser, Tenant: "acme", ID: strings.Repeat("u", maxID+1)},
	}
	for _, e := range tests {
		w, err := NewWriter(&bytes.Buffer{}, Header{})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Add(e); err == nil {
			t.Errorf("Add(%q %.10q %.10q) succeeded", e.Kind, e.Tenant, e.ID)
		}
	}
}

// FuzzReadHeader: whatever the object store hands a guard, reading it fails
// cleanly or yields entries that write back to the same bytes.
func FuzzReadHeader(f *testing.F) {
	f.Add(write(f, Header{Seq: 9, StreamCreated: time.Unix(3, 4), Entries: 2},
		Entry{Kind: events.KindTenant, Tenant: "acme", At: time.Unix(5, 0)}, Entry{Kind: events.KindUser, Tenant: "acme", ID: "bob", At: time.Unix(-6, 7)}))
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, data []byte) {
		counts, cerr := CountKinds(data)
		if cerr != nil && !errors.Is(cerr, ErrFormat) {
			t.Fatalf("CountKinds: %v, want ErrFormat", cerr)
		}
		h, each, err := ReadHeader(bytes.NewReader(data))
		if err != nil {
			return
		}
		var out bytes.Buffer
		w, err := NewWriter(&out, h)
		if err != nil {
			t.Fatal(err)
		}
		read := map[string]int{}
		if err := each(func(e Entry) error { read[e.Kind]++; return w.Add(e) }); err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("read: %v, want ErrFormat", err)
			}
			return
		}
		if cerr != nil || !maps.Equal(counts, read) {
			t.Fatalf("CountKinds = %v, %v; the reader read %v", counts, cerr, read)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		// Varints have one shortest form, but a reader accepts others:
		// compare what the input means, read back.
		h2, each2, err := ReadHeader(&out)
		if err != nil || h2 != h {
			t.Fatalf("rewritten header %+v, %v; want %+v", h2, err, h)
		}
		if err := each2(func(Entry) error { return nil }); err != nil {
			t.Fatalf("rewritten entries: %v", err)
		}
	})
}
