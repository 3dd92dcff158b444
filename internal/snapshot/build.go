package snapshot

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evict-dev/evict/events"
)

// seqHeader carries the covered sequence in the object's metadata, so that
// the Builder can tell how old the snapshot is without reading it.
const seqHeader = "Evict-Seq"

// BucketConfig is the object store bucket of the snapshots: one object,
// replaced in place.
func BucketConfig(replicas int) jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{
		Bucket:      Bucket,
		Description: "evict: the latest snapshot of EVICT_STATE, for guards that start",
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// Builder keeps the snapshot in Bucket current, and with it the tenant
// snapshots (see Build): every Interval it looks at
// how far EVICT_STATE has gone past the snapshot, and builds a new one once
// that is Every messages or more. Several evictd replicas may each run one:
// two that build at once both store a valid snapshot, and the later wins.
type Builder struct {
	JetStream jetstream.JetStream
	// Every is how many messages the stream may go past the snapshot
	// before a new one is built: a new guard reads those from the stream.
	// A stream shorter than Every gets no snapshot at all.
	Every uint64
	// Interval is how often to look; default 30s.
	Interval time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger

	builds  *prometheus.CounterVec
	seconds prometheus.Histogram
	entries prometheus.Gauge
}

// Register registers the builder's metrics with reg.
func (b *Builder) Register(reg prometheus.Registerer) {
	b.builds = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "evict_snapshot_builds_total",
		Help: "Snapshots of EVICT_STATE built, by result (ok, error)."}, []string{"result"})
	b.seconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "evict_snapshot_build_seconds",
		Help: "Time to read EVICT_STATE and store a snapshot of it.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)})
	b.entries = prometheus.NewGauge(prometheus.GaugeOpts{Name: "evict_snapshot_entries",
		Help: "Entries in the last snapshot this process built."})
	for _, r := range []string{"ok", "error"} {
		b.builds.WithLabelValues(r) // both series exist from the start, for alerts
	}
	if reg != nil {
		reg.MustRegister(b.builds, b.seconds, b.entries)
	}
}

// Run builds snapshots as Every says until ctx ends.
func (b *Builder) Run(ctx context.Context) error {
	if b.builds == nil {
		b.Register(nil)
	}
	if b.Logger == nil {
		b.Logger = slog.Default()
	}
	t := time.NewTicker(cmp.Or(b.Interval, 30*time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		due, err := b.due(ctx)
		if err == nil && due {
			start := time.Now()
			var h Header
			if h, err = Build(ctx, b.JetStream, TenantMin); err == nil {
				b.builds.WithLabelValues("ok").Inc()
				b.seconds.Observe(time.Since(start).Seconds())
				b.entries.Set(float64(h.Entries))
				b.Logger.InfoContext(ctx, "snapshot built", "sequence", h.Seq, "entries", h.Entries, "took", time.Since(start).Round(time.Millisecond))
			}
		}
		if err != nil && ctx.Err() == nil {
			b.builds.WithLabelValues("error").Inc()
			b.Logger.WarnContext(ctx, "snapshot", "err", err)
		}
	}
}

// due tells whether the stream has gone Every messages past the snapshot.
func (b *Builder) due(ctx context.Context) (bool, error) {
	s, err := b.JetStream.Stream(ctx, events.StateStream)
	if err != nil {
		return false, fmt.Errorf("snapshot: %w", err)
	}
	last := s.CachedInfo().State.LastSeq
	obs, err := b.JetStream.ObjectStore(ctx, Bucket)
	if err != nil {
		return false, fmt.Errorf("snapshot: %w", err)
	}
	var covered uint64
	info, err := obs.GetInfo(ctx, Object)
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound):
	case err != nil:
		return false, fmt.Errorf("snapshot: %w", err)
	default:
		covered, _ = strconv.ParseUint(info.Headers.Get(seqHeader), 10, 64)
	}
	return last >= covered+b.Every, nil
}

// Build reads EVICT_STATE up to its last message and stores a snapshot of
// it in Bucket, replacing the one there, and one of each tenant with
// tenantMin entries or more in TenantStream (none when tenantMin is 0). It
// returns what the snapshot covers. The snapshots are assembled in memory
// (about 35 bytes an entry, twice).
func Build(ctx context.Context, js jetstream.JetStream, tenantMin int) (Header, error) {
	s, err := js.Stream(ctx, events.StateStream)
	if err != nil {
		return Header{}, fmt.Errorf("snapshot: %w", err)
	}
	info := s.CachedInfo()
	h := Header{Seq: info.State.LastSeq, StreamCreated: info.Created}
	// The header, which counts the entries, goes in front of them.
	var body bytes.Buffer
	w := newWriter(&body)
	tenants := &tenantParts{min: tenantMin, parts: map[string]*tenantPart{}}
	add := w.Add
	if tenantMin > 0 {
		add = func(e Entry) error {
			if err := w.Add(e); err != nil {
				return err
			}
			return tenants.add(e)
		}
	}
	if h.Seq > 0 {
		if err := read(ctx, s, h.Seq, add); err != nil {
			return h, err
		}
	}
	if err := w.Close(); err != nil {
		return h, err
	}
	h.Entries = w.n
	var full bytes.Buffer
	full.Grow(body.Len() + 64)
	hw := newWriter(&full)
	if err := hw.header(h); err != nil {
		return h, err
	}
	if err := hw.Close(); err != nil {
		return h, err
	}
	full.Write(body.Bytes())
	obs, err := js.ObjectStore(ctx, Bucket)
	if err != nil {
		return h, fmt.Errorf("snapshot: %w", err)
	}
	meta := jetstream.ObjectMeta{Name: Object, Headers: nats.Header{seqHeader: []string{strconv.FormatUint(h.Seq, 10)}}}
	if _, err := obs.Put(ctx, meta, &full); err != nil {
		return h, fmt.Errorf("snapshot: store: %w", err)
	}
	return h, tenants.store(ctx, js, h)
}

// read calls add for each entry of the stream's messages up to sequence
// last.
func read(ctx context.Context, s jetstream.Stream, last uint64, add func(Entry) error) error {
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.StatePrefix + ">"},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("snapshot: consumer: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return fmt.Errorf("snapshot: consume: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("snapshot: read stream: %w", err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("snapshot: read stream: %w", err)
		}
		if meta.Sequence.Stream > last {
			return nil
		}
		if msg.Subject() != events.HeartbeatSubject {
			if err := addMessage(msg.Subject(), msg.Data(), add); err != nil {
				return err
			}
		}
		if meta.Sequence.Stream == last {
			return nil
		}
	}
}

// addMessage adds the entries of one state message. A message the guards
// skip (an unknown type, data that does not match its subject) is skipped
// here too.
func addMessage(subject string, data []byte, add func(Entry) error) error {
	r, users, err := events.DecodeState(subject, data)
	if err != nil {
		return nil
	}
	if users == nil {
		return add(Entry{Kind: r.Kind, Tenant: r.Tenant, ID: r.ID, At: r.At})
	}
	for _, u := range users {
		if err := add(Entry{Kind: events.KindUser, Tenant: r.Tenant, ID: u, At: r.At}); err != nil {
			return err
		}
	}
	return nil
}
