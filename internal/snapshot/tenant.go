package snapshot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Tenant snapshots. A guard limited to tenants may not read the snapshot of
// every tenant, and the stream is slow to read for a big tenant (1,000,000
// entries took 3.1 s from the stream, 0.5 s from a snapshot, on two cores).
// So each tenant with at least TenantMin entries also gets a snapshot of
// its own, in the same format, stored in TenantStream on subjects that
// name the tenant, which NATS permissions can grant per tenant:
//
//	evict.snapshot.<tenant>.head            what the latest build is (JSON)
//	evict.snapshot.<tenant>.c.<build>.<n>   its chunks, n from 0
//
// A build is named by the EVICT_STATE sequence it covers, so replicas that
// build at once write the same subjects with the same data. The chunks of
// the build before the latest are kept, for a guard that was reading them
// when the new head was written; older ones are purged.
const (
	TenantStream = "EVICT_TENANT_SNAPSHOTS"
	TenantPrefix = "evict.snapshot."
	// TenantMin is the fewest entries for which a tenant gets a snapshot.
	// Fewer take a guard at most about 45 ms to read from the stream, at
	// the 230,000–320,000 entries a second evict-bench measured there (a
	// snapshot loads 2,000,000–2,500,000); not worth a snapshot's upkeep.
	TenantMin = 10_000
	// chunkSize stays under NATS's default max_payload of 1 MiB.
	chunkSize = 512 << 10
)

// TenantStreamConfig is the stream of the tenant snapshots.
func TenantStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              TenantStream,
		Description:       "evict: the latest snapshot of each big tenant's part of EVICT_STATE, for tenant-scoped guards that start",
		Subjects:          []string{TenantPrefix + ">"},
		Storage:           jetstream.FileStorage,
		MaxMsgsPerSubject: 1,
		Discard:           jetstream.DiscardOld,
		Replicas:          replicas,
		AllowDirect:       true,
	}
}

// TenantHeadSubject is the subject of tenant's head; TenantSubjects covers
// everything of tenant's snapshots, for permissions.
func TenantHeadSubject(tenant string) string { return TenantPrefix + tenant + ".head" }

// TenantSubjects is every subject of tenant's snapshots.
func TenantSubjects(tenant string) string { return TenantPrefix + tenant + ".>" }

// chunkPrefix begins the subjects of the chunks of tenant's build; the
// chunk's number ends them.
func chunkPrefix(tenant string, build uint64) string {
	return TenantPrefix + tenant + ".c." + strconv.FormatUint(build, 10) + "."
}

func chunkFilter(tenant string, build uint64) string { return chunkPrefix(tenant, build) + ">" }

// tenantHead says which build is a tenant's latest and how to check it.
type tenantHead struct {
	Build    uint64 `json:"build"`
	Chunks   int    `json:"chunks"`
	Size     int    `json:"size"`
	SHA256   string `json:"sha256"`
	Previous uint64 `json:"previous,omitempty"`
}

// ErrNoTenantSnapshot is returned by ReadTenant when tenant has none.
var ErrNoTenantSnapshot = errors.New("snapshot: the tenant has no snapshot")

// tenantParts splits a build's entries by tenant, for those with TenantMin
// entries or more.
type tenantParts struct {
	min   int
	parts map[string]*tenantPart
}

type tenantPart struct {
	body bytes.Buffer
	w    *Writer
}

func (p *tenantParts) add(e Entry) error {
	t := p.parts[e.Tenant]
	if t == nil {
		t = &tenantPart{}
		t.w = newWriter(&t.body)
		p.parts[e.Tenant] = t
	}
	return t.w.Add(e)
}

// store writes the snapshot of every tenant with enough entries as of h.
func (p *tenantParts) store(ctx context.Context, js jetstream.JetStream, h Header) error {
	for tenant, t := range p.parts {
		if t.w.n < uint64(p.min) {
			delete(p.parts, tenant)
		}
	}
	if len(p.parts) == 0 {
		return nil
	}
	s, err := js.Stream(ctx, TenantStream)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	for tenant, t := range p.parts {
		if err := t.w.Close(); err != nil {
			return err
		}
		var full bytes.Buffer
		full.Grow(t.body.Len() + 64)
		hw := newWriter(&full)
		if err := hw.header(Header{Seq: h.Seq, StreamCreated: h.StreamCreated, Entries: t.w.n}); err != nil {
			return err
		}
		if err := hw.Close(); err != nil {
			return err
		}
		full.Write(t.body.Bytes())
		if err := storeTenant(ctx, js, s, tenant, h.Seq, full.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

// storeTenant writes data as tenant's build, then its head, then purges the
// build before the previous one.
func storeTenant(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, tenant string, build uint64, data []byte) error {
	prev, err := readHead(ctx, s, tenant)
	if err != nil && !errors.Is(err, ErrNoTenantSnapshot) {
		return err
	}
	if prev.Build == build {
		return nil // stored already, by another replica
	}
	sum := sha256.Sum256(data)
	head := tenantHead{Build: build, Size: len(data), SHA256: hex.EncodeToString(sum[:]), Previous: prev.Build}
	for off := 0; off < len(data); off += chunkSize {
		subject := chunkPrefix(tenant, build) + strconv.Itoa(head.Chunks)
		if _, err := js.Publish(ctx, subject, data[off:min(off+chunkSize, len(data))]); err != nil {
			return fmt.Errorf("snapshot: store %s: %w", subject, err)
		}
		head.Chunks++
	}
	b, err := json.Marshal(head)
	if err != nil {
		return err
	}
	if _, err := js.Publish(ctx, TenantHeadSubject(tenant), b); err != nil {
		return fmt.Errorf("snapshot: store the head of %s: %w", tenant, err)
	}
	if prev.Previous != 0 && prev.Previous != build {
		if err := s.Purge(ctx, jetstream.WithPurgeSubject(chunkFilter(tenant, prev.Previous))); err != nil {
			return fmt.Errorf("snapshot: purge build %d of %s: %w", prev.Previous, tenant, err)
		}
	}
	return nil
}

func readHead(ctx context.Context, s jetstream.Stream, tenant string) (tenantHead, error) {
	var h tenantHead
	m, err := s.GetLastMsgForSubject(ctx, TenantHeadSubject(tenant))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return h, ErrNoTenantSnapshot
	}
	if err != nil {
		return h, fmt.Errorf("snapshot: head of %s: %w", tenant, err)
	}
	if err := json.Unmarshal(m.Data, &h); err != nil {
		return h, fmt.Errorf("%w: head of %s: %v", ErrFormat, tenant, err)
	}
	return h, nil
}

// ReadTenant reads tenant's latest snapshot whole and checks it against its
// head: read it with ReadHeader. It fails with ErrNoTenantSnapshot when
// there is none, and gives up on a build whose chunks do not all arrive
// within wait (purged while it was read).
func ReadTenant(ctx context.Context, js jetstream.JetStream, tenant string, wait time.Duration) ([]byte, error) {
	s, err := js.Stream(ctx, TenantStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, ErrNoTenantSnapshot
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	h, err := readHead(ctx, s, tenant)
	if err != nil {
		return nil, err
	}
	cons, err := js.OrderedConsumer(ctx, TenantStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{chunkFilter(tenant, h.Build)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot: consumer on the snapshot of %s: %w", tenant, err)
	}
	if info := cons.CachedInfo(); info == nil || info.NumPending != uint64(h.Chunks) {
		return nil, fmt.Errorf("snapshot: build %d of %s is not whole", h.Build, tenant)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(16))
	if err != nil {
		return nil, fmt.Errorf("snapshot: read the snapshot of %s: %w", tenant, err)
	}
	defer it.Stop()
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	data := make([]byte, 0, h.Size)
	for range h.Chunks {
		msg, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("snapshot: read the snapshot of %s: %w", tenant, errors.Join(err, ctx.Err()))
		}
		data = append(data, msg.Data()...)
	}
	sum := sha256.Sum256(data)
	if len(data) != h.Size || hex.EncodeToString(sum[:]) != h.SHA256 {
		return nil, fmt.Errorf("%w: the snapshot of %s does not match its head", ErrFormat, tenant)
	}
	return data, nil
}
