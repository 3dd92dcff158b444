// Package snapshot writes and reads snapshots of the revocation state: every
// entry of the EVICT_STATE stream up to a sequence, in a compact binary form,
// kept as one object in a NATS object store bucket. A guard that starts
// loads the latest snapshot and then reads the stream from the sequence
// after it, instead of receiving, parsing and decoding every message of the
// stream: 1,000,000 entries are about 35 MB of snapshot and half a second to
// load, where the stream takes seconds. evictd builds the snapshots
// (Builder); pkg/guard reads them (Read).
//
// That snapshot holds the entries of every tenant, so only guards of every
// tenant read it; a guard limited to tenants reads each of its tenants'
// own snapshot, which a tenant of TenantMin entries or more gets (see
// tenant.go), and its tenants' subjects of the stream after it.
//
// Format, all integers as Go's binary varints: the magic line
// "evict-snapshot-1\n", then the header (uvarint stream sequence covered,
// varint stream creation time in Unix nanoseconds, uvarint entry count),
// then each entry (one kind byte, uvarint-prefixed tenant, uvarint-prefixed
// id, varint time in Unix nanoseconds). The object store's SHA-256 digest
// guards the whole.
package snapshot

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/evict-dev/evict/events"
)

// Bucket is the object store bucket, and Object the name of the snapshot in
// it.
const (
	Bucket = "EVICT_SNAPSHOTS"
	Object = "state"
)

// Stream is the stream that backs Bucket, for NATS permissions.
const Stream = "OBJ_" + Bucket

const magic = "evict-snapshot-1\n"

// maxID bounds a tenant or id: events.CheckID allows 128 bytes.
const maxID = 128

// Header says what a snapshot covers.
type Header struct {
	// Seq is the last EVICT_STATE sequence the snapshot covers.
	Seq uint64
	// StreamCreated is when that stream was created: a snapshot of an
	// earlier stream of the same name does not apply.
	StreamCreated time.Time
	// Entries is the number of entries that follow.
	Entries uint64
}

// Entry is one revocation entry: a revocation as the guards apply it, Kind
// one of events.KindTenant, KindUser, KindSession, KindDevice, KindTrust (a
// batch of users is one entry per user).
type Entry struct {
	Kind   string
	Tenant string
	ID     string
	At     time.Time
}

var kinds = []string{events.KindTenant, events.KindUser, events.KindSession, events.KindDevice, events.KindTrust}

func kindCode(k string) (byte, bool) {
	for i, n := range kinds {
		if n == k {
			return byte(i + 1), true
		}
	}
	return 0, false
}

// ErrFormat is returned for input that is not a snapshot of this version.
var ErrFormat = errors.New("snapshot: bad format")

// Writer writes a snapshot.
type Writer struct {
	w   *bufio.Writer
	n   uint64
	buf []byte
}

// NewWriter writes h to w and returns a Writer for h.Entries entries.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	sw := newWriter(w)
	if err := sw.header(h); err != nil {
		return nil, err
	}
	return sw, nil
}

// newWriter is a Writer that writes entries only.
func newWriter(w io.Writer) *Writer {
	return &Writer{w: bufio.NewWriterSize(w, 256<<10), buf: make([]byte, 0, 512)}
}

func (sw *Writer) header(h Header) error {
	b := append(sw.buf[:0], magic...)
	b = binary.AppendUvarint(b, h.Seq)
	b = binary.AppendVarint(b, h.StreamCreated.UnixNano())
	b = binary.AppendUvarint(b, h.Entries)
	if _, err := sw.w.Write(b); err != nil {
		return fmt.Errorf("snapshot: write: %w", err)
	}
	return nil
}

// Add writes one entry.
func (sw *Writer) Add(e Entry) error {
	code, ok := kindCode(e.Kind)
	if !ok || len(e.Tenant) > maxID || len(e.ID) > maxID {
		return fmt.Errorf("snapshot: entry %q %q %q cannot be written", e.Kind, e.Tenant, e.ID)
	}
	b := append(sw.buf[:0], code)
	b = binary.AppendUvarint(b, uint64(len(e.Tenant)))
	b = append(b, e.Tenant...)
	b = binary.AppendUvarint(b, uint64(len(e.ID)))
	b = append(b, e.ID...)
	b = binary.AppendVarint(b, e.At.UnixNano())
	sw.buf = b
	if _, err := sw.w.Write(b); err != nil {
		return fmt.Errorf("snapshot: write: %w", err)
	}
	sw.n++
	return nil
}

// Close flushes what is buffered; it does not close the underlying writer.
func (sw *Writer) Close() error {
	if err := sw.w.Flush(); err != nil {
		return fmt.Errorf("snapshot: write: %w", err)
	}
	return nil
}

// ReadHeader reads the header of the snapshot in r and returns a function
// that reads its entries, calling fn for each, in the order written. It
// fails with
// ErrFormat when the input is not a snapshot, is cut short, or does not hold
// the number of entries its header says.
func ReadHeader(r io.Reader) (Header, func(fn func(Entry) error) error, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	var h Header
	m := make([]byte, len(magic))
	if _, err := io.ReadFull(br, m); err != nil || string(m) != magic {
		return h, nil, fmt.Errorf("%w: no snapshot magic", ErrFormat)
	}
	var err error
	var created int64
	if h.Seq, err = binary.ReadUvarint(br); err == nil {
		if created, err = binary.ReadVarint(br); err == nil {
			h.Entries, err = binary.ReadUvarint(br)
		}
	}
	if err != nil {
		return h, nil, fmt.Errorf("%w: header: %v", ErrFormat, err)
	}
	h.StreamCreated = time.Unix(0, created)
	read := func(fn func(Entry) error) error {
		var buf [2 * maxID]byte
		for i := uint64(0); i < h.Entries; i++ {
			e, err := readEntry(br, &buf)
			if err != nil {
				return fmt.Errorf("%w: entry %d of %d: %v", ErrFormat, i+1, h.Entries, err)
			}
			if err := fn(e); err != nil {
				return err
			}
		}
		if _, err := br.ReadByte(); err != io.EOF {
			return fmt.Errorf("%w: more than the %d entries of the header", ErrFormat, h.Entries)
		}
		return nil
	}
	return h, read, nil
}

// CountKinds counts the entries of each kind (events.KindUser and the
// rest) in the snapshot in data, for a reader that sizes its tables before
// it reads the entries: it only steps over them, in about a seventh of the
// time reading them takes (16 ms for 1,000,000 entries against 106–131
// ms). It fails with ErrFormat where ReadHeader's reader would, except
// that it does not check the count of the header.
func CountKinds(data []byte) (map[string]int, error) {
	b, ok := bytes.CutPrefix(data, []byte(magic))
	if !ok {
		return nil, fmt.Errorf("%w: no snapshot magic", ErrFormat)
	}
	// Sequence, stream creation and entry count: a varint has the length
	// of the uvarint of the same bytes, so Uvarint steps over all three.
	for range 3 {
		_, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, fmt.Errorf("%w: header", ErrFormat)
		}
		b = b[n:]
	}
	counts := make([]int, len(kinds)+1) // by kind code, 1-based
	for i := 1; len(b) > 0; i++ {
		code := b[0]
		if code == 0 || int(code) > len(kinds) {
			return nil, fmt.Errorf("%w: entry %d: kind %d", ErrFormat, i, code)
		}
		b = b[1:]
		for range 2 { // tenant, id
			l, n := binary.Uvarint(b)
			if n <= 0 || l > maxID || uint64(len(b)-n) < l {
				return nil, fmt.Errorf("%w: entry %d: bad string", ErrFormat, i)
			}
			b = b[n+int(l):]
		}
		_, n := binary.Varint(b)
		if n <= 0 {
			return nil, fmt.Errorf("%w: entry %d: bad time", ErrFormat, i)
		}
		b = b[n:]
		counts[code]++
	}
	m := make(map[string]int, len(kinds))
	for i, k := range kinds {
		if counts[i+1] > 0 {
			m[k] = counts[i+1]
		}
	}
	return m, nil
}

func readEntry(br *bufio.Reader, buf *[2 * maxID]byte) (Entry, error) {
	var e Entry
	code, err := br.ReadByte()
	if err != nil {
		return e, err
	}
	if code == 0 || int(code) > len(kinds) {
		return e, fmt.Errorf("kind %d", code)
	}
	e.Kind = kinds[code-1]
	tenant, err := readString(br, buf[:maxID])
	if err != nil {
		return e, err
	}
	id, err := readString(br, buf[maxID:])
	if err != nil {
		return e, err
	}
	at, err := binary.ReadVarint(br)
	if err != nil {
		return e, err
	}
	e.Tenant, e.ID, e.At = string(tenant), string(id), time.Unix(0, at)
	return e, nil
}

func readString(br *bufio.Reader, buf []byte) ([]byte, error) {
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return nil, err
	}
	if n > maxID {
		return nil, fmt.Errorf("string of %d bytes", n)
	}
	b := buf[:n]
	if _, err := io.ReadFull(br, b); err != nil {
		return nil, err
	}
	return b, nil
}
