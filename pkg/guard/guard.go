// Package guard is the SDK that web and mobile backends embed to enforce
// evict's logouts on every request.
//
// A Guard reads evict's revocation state from JetStream (stream
// EVICT_STATE: the last not-before watermark of each tenant and user and
// every revoked session), keeps it in memory, and answers "is this session
// revoked?" without I/O, locks or allocation. It stays current through an
// ordered consumer that resumes where it left off after a disconnection, and
// it knows how fresh its state is from the relay's heartbeats: a heartbeat is
// only sent once evict's outbox is empty, so the time of the last applied
// heartbeat bounds what the guard may have missed.
package guard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/snapshot"
	"github.com/evict-dev/evict/pkg/guard/internal/revset"
)

// Errors returned by Check and Healthy. Branch on them with errors.Is.
var (
	// ErrSessionRevoked means the session was logged out; refuse it.
	ErrSessionRevoked = errors.New("guard: session revoked")
	// ErrStateStale means the guard has not been able to confirm its state
	// for longer than Config.MaxStaleness (or has not loaded it yet) and the
	// policy is FailClosed.
	ErrStateStale = errors.New("guard: revocation state is stale")
	// ErrNotReady is returned by Healthy before the initial state is loaded.
	ErrNotReady = errors.New("guard: revocation state not loaded yet")
)

// Policy says what Check does while the state is stale.
type Policy int

const (
	// FailOpen lets sessions through on the last known state while the guard
	// is cut off from evict (counted in evict_guard_stale_checks_total). A
	// NATS outage then degrades to "logouts apply late", not to an outage of
	// the backend. This is the default.
	FailOpen Policy = iota
	// FailClosed refuses every session with ErrStateStale while the state is
	// stale: no revoked session can slip through, at the price of
	// availability.
	FailClosed
)

// Session identifies a session to check.
type Session struct {
	Tenant string
	User   string
	ID     string
	// IssuedAt is when the session was issued. Use the issued_at evict
	// returned when the session was registered: it is on evict's clock, the
	// clock of the logout watermarks.
	IssuedAt time.Time
}

// Config configures a Guard.
type Config struct {
	// Conn is the NATS connection; required. The guard does not close it.
	Conn *nats.Conn
	// Tenants limits the state the guard loads to these tenants, read on
	// one consumer each, and makes it report per tenant; empty loads every
	// tenant, which needs a credential of every tenant. A tenant-scoped
	// credential (a guard key, guard.KeyOptions) must name its tenants here.
	Tenants []string
	// MaxStaleness is how long the guard may go without a relay heartbeat
	// before its state counts as stale. Default 30s.
	MaxStaleness time.Duration
	// WhenStale is the policy while the state is stale. Default FailOpen.
	WhenStale Policy
	// SessionMaxAge is the longest session lifetime; entries older than that
	// are dropped from memory. It must not be shorter than evictd's
	// EVICT_SESSION_MAX_AGE. Default 720h.
	SessionMaxAge time.Duration
	// Instance names this guard instance in its reports to evict; register
	// sessions with holder = Instance so that evict can tell which guard
	// must confirm their logout. 1 to 128 characters of events.ValidID.
	// Default: host name, process id and a random suffix.
	Instance string
	// ReportInterval is how often the guard reports its applied sequence
	// when nothing changes; it also reports right after applying new
	// revocations. evict treats an instance silent for three intervals as
	// down. Default 5s.
	ReportInterval time.Duration
	// SeenInterval is how often the guard reports the sessions that made
	// requests (see Seen). Default 30s.
	SeenInterval time.Duration
	// DrainTimeout bounds how long in-flight work (see Busy) may keep a
	// revoked session's live connections open. Default 5m.
	DrainTimeout time.Duration
	// NoSnapshot makes the guard read the whole state stream at start
	// instead of evict's latest snapshot and the stream after it: the
	// snapshot of every tenant for a guard of every tenant, each tenant's
	// own (evict keeps one for tenants of 10,000 entries or more) for a
	// guard limited to tenants.
	NoSnapshot bool
	// OnRevocation, when set, is called on the guard's apply goroutine after
	// each revocation is applied. It must not block.
	OnRevocation func(events.Revocation)
	// Registerer receives the guard's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Guard holds the revocation state in memory. Check, Middleware, Hold,
// Ready and Healthy are safe for concurrent use.
type Guard struct {
	cfg   Config
	log   *slog.Logger
	set   *revset.Set
	holds holds
	seen  seenSet

	ready     chan struct{}
	readyOnce sync.Once
	isReady   atomic.Bool
	stale     atomic.Bool   // read on every Check; updated by a ticker
	syncedAt  atomic.Int64  // unix nanos of the last heartbeat applied
	appliedSq atomic.Uint64 // the largest sequence applied of revocation state
	feeds     []*feed
	behind    atomic.Int32 // feeds that have not reached the end of the stream yet
	applyMu   sync.Mutex   // one writer of the set at a time, whichever feed
	lastPrune time.Time
	created   time.Time
	kick      chan struct{} // asks the reporter to report now

	metrics *metrics
}

// New returns a Guard for cfg. Call Run to load and follow the state.
func New(cfg Config) (*Guard, error) {
	if cfg.Conn == nil {
		return nil, errors.New("guard: Config.Conn is required")
	}
	for _, t := range cfg.Tenants {
		if err := events.CheckID("tenant", t); err != nil {
			return nil, fmt.Errorf("guard: %w", err)
		}
	}
	if cfg.MaxStaleness <= 0 {
		cfg.MaxStaleness = 30 * time.Second
	}
	if cfg.SessionMaxAge <= 0 {
		cfg.SessionMaxAge = 720 * time.Hour
	}
	if cfg.ReportInterval <= 0 {
		cfg.ReportInterval = 5 * time.Second
	}
	if cfg.SeenInterval <= 0 {
		cfg.SeenInterval = 30 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 5 * time.Minute
	}
	if cfg.Instance == "" {
		cfg.Instance = defaultInstance()
	}
	if err := events.CheckID("instance", cfg.Instance); err != nil {
		return nil, fmt.Errorf("guard: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	g := &Guard{
		cfg:     cfg,
		log:     log.With("component", "guard"),
		set:     revset.New(1024),
		ready:   make(chan struct{}),
		created: time.Now(),
		kick:    make(chan struct{}, 1),
	}
	feeds, err := newFeeds(cfg.Tenants)
	if err != nil {
		return nil, err
	}
	g.feeds = feeds
	g.behind.Store(int32(len(g.feeds)))
	g.holds.init()
	g.seen.init()
	g.stale.Store(true)
	g.metrics = newMetrics(g, cfg.Registerer)
	return g, nil
}

// Kinds of entries in the revocation set.
const (
	kindTenant  byte = 't'
	kindUser    byte = 'u'
	kindSession byte = 's'
	kindDevice  byte = 'd' // a device whose trust was revoked
	kindTrust   byte = 'r' // a user's trust watermark
)

// Check reports whether s may proceed: nil, ErrSessionRevoked, or (with
// FailClosed, while the state is stale) ErrStateStale. It does no I/O and
// no allocation.
func (g *Guard) Check(s Session) error {
	if g.stale.Load() {
		if g.cfg.WhenStale == FailClosed {
			return ErrStateStale
		}
		g.metrics.staleChecks.inc()
	}
	if g.revoked(s.Tenant, s.User, s.ID, s.IssuedAt.UnixNano()) {
		return ErrSessionRevoked
	}
	return nil
}

// revoked is the state lookup behind Check. A watermark revokes sessions
// issued at or before it; watermarks are stored rounded up to the end of
// their microsecond, the precision of evict's timestamps.
func (g *Guard) revoked(tenant, user, session string, issued int64) bool {
	t := g.set.Tenant(tenant)
	if _, ok := g.set.GetIn(kindSession, t, session); ok {
		return true
	}
	if nb, ok := g.set.GetIn(kindUser, t, user); ok && issued <= nb {
		return true
	}
	if nb, ok := g.set.GetIn(kindTenant, t, ""); ok && issued <= nb {
		return true
	}
	return false
}

// DeviceTrusted reports whether device, trusted for user since trustedSince
// (the time the user chose "remember this device", on evict's clock when
// registered through evict), may still skip the second factor. It is false
// once the device's trust, or all of the user's device trust, was revoked
// after that; the login must then ask for full 2FA. Like Check, it does no
// I/O and no allocation; while the state is stale it answers from the last
// known state, or false under FailClosed.
func (g *Guard) DeviceTrusted(tenant, user, device string, trustedSince time.Time) bool {
	if g.stale.Load() && g.cfg.WhenStale == FailClosed {
		return false
	}
	since := trustedSince.UnixNano()
	if at, ok := g.set.Get(kindDevice, tenant, device); ok && since <= at {
		return false
	}
	if nb, ok := g.set.Get(kindTrust, tenant, user); ok && since <= nb {
		return false
	}
	return true
}

// Ready is closed once the complete state present at start has been loaded.
func (g *Guard) Ready() <-chan struct{} { return g.ready }

// Healthy is nil when the state is loaded and fresh; ErrNotReady or
// ErrStateStale otherwise. Use it for the holder's readiness probe.
func (g *Guard) Healthy() error {
	switch {
	case !g.isReady.Load():
		return ErrNotReady
	case g.stale.Load():
		return ErrStateStale
	}
	return nil
}

// StateAge is the time since the last heartbeat the guard applied: every
// revocation committed before that moment is in its state. Before the first
// heartbeat it is the time since the guard was created: nothing vouches for
// the state yet.
func (g *Guard) StateAge() time.Duration {
	s := g.syncedAt.Load()
	if s == 0 {
		return time.Since(g.created)
	}
	return time.Since(time.Unix(0, s))
}

// Instance is the name this guard reports under; register sessions with it
// as their holder.
func (g *Guard) Instance() string { return g.cfg.Instance }

// Entries is the number of revocation entries held.
func (g *Guard) Entries() int { return g.set.Len() }

// AppliedSequence is the EVICT_STATE stream sequence of the last message applied.
func (g *Guard) AppliedSequence() uint64 { return g.appliedSq.Load() }

// feed is one ordered consumer of EVICT_STATE. A guard that holds every
// tenant reads one feed, evict.state.>. A guard limited to tenants reads one
// feed per tenant plus one for the heartbeat: NATS permissions can bind a
// single-filter consumer to a tenant, not a multi-filter one (see
// internal/bus.TenantGuardPermissions). With separate feeds, a heartbeat
// vouches for the tenant feeds only as far as they keep up with it; they
// read the same stream on the same connection, so they lag by their own
// backlog at most, and a stalled one is re-created by its ordered consumer.
type feed struct {
	tenant  string // "" for the all-tenant feed and the heartbeat feed
	filter  string
	applied atomic.Uint64 // stream sequence of the last message applied
	caught  bool          // has seen the end of the stream once; under applyMu, or before following
}

func newFeeds(tenants []string) ([]*feed, error) {
	if len(tenants) == 0 {
		return []*feed{{filter: events.StatePrefix + ">"}}, nil
	}
	fs := []*feed{{filter: events.HeartbeatSubject}}
	for _, t := range tenants {
		f, err := events.TenantStateFilter(t)
		if err != nil {
			return nil, fmt.Errorf("guard: %w", err)
		}
		fs = append(fs, &feed{tenant: t, filter: f})
	}
	return fs, nil
}

// Run loads the state and follows it until ctx ends; it returns nil then.
// It waits for the EVICT_STATE stream to exist.
func (g *Guard) Run(ctx context.Context) error {
	js, err := jetstream.New(g.cfg.Conn)
	if err != nil {
		return fmt.Errorf("guard: %w", err)
	}
	var stream jetstream.Stream
	for {
		stream, err = js.Stream(ctx, events.StateStream)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		g.log.WarnContext(ctx, "waiting for the state stream", "stream", events.StateStream, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	// A guard starts from evict's snapshot when there is one, and reads
	// the stream after it: a guard of every tenant from the snapshot of
	// them all, a guard limited to tenants from each tenant's own.
	var from uint64
	if len(g.cfg.Tenants) == 0 && !g.cfg.NoSnapshot {
		if from, err = g.loadSnapshot(ctx, js, stream); err != nil {
			g.log.WarnContext(ctx, "snapshot not used; reading the whole state stream", "err", err)
		}
	}
	var its []jetstream.MessagesContext
	defer func() {
		for _, it := range its {
			it.Stop()
		}
	}()
	var loaded float64 // entries from tenant snapshots
	for _, f := range g.feeds {
		cc := jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{f.filter},
			DeliverPolicy:  jetstream.DeliverAllPolicy,
		}
		from := from
		if f.tenant != "" && !g.cfg.NoSnapshot {
			seq, n, err := g.loadTenantSnapshot(ctx, js, stream, f.tenant)
			switch {
			case err == nil:
				from = seq
				loaded += float64(n)
				g.metrics.snapshot.Set(loaded)
			case !errors.Is(err, snapshot.ErrNoTenantSnapshot):
				g.log.WarnContext(ctx, "tenant snapshot not used; reading the tenant's whole state", "tenant", f.tenant, "err", err)
			}
		}
		if from > 0 {
			cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from+1
			f.applied.Store(from)
		}
		cons, err := stream.OrderedConsumer(ctx, cc)
		if err != nil {
			return fmt.Errorf("guard: consumer on %s: %w", f.filter, err)
		}
		if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
			g.caughtUp(f)
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(4096))
		if err != nil {
			return fmt.Errorf("guard: consume %s: %w", f.filter, err)
		}
		its = append(its, it)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		g.watchStaleness(ctx)
	}()
	go func() {
		defer wg.Done()
		g.report(ctx)
	}()
	for i, it := range its {
		stop := context.AfterFunc(ctx, it.Stop)
		defer stop()
		if i == 0 {
			continue // read below, on this goroutine
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.follow(ctx, g.feeds[i], it)
		}()
	}
	g.follow(ctx, g.feeds[0], its[0])
	wg.Wait()
	return nil
}

func (g *Guard) follow(ctx context.Context, f *feed, it jetstream.MessagesContext) {
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			g.log.WarnContext(ctx, "state consumer", "filter", f.filter, "err", err)
			continue
		}
		g.applyMu.Lock()
		g.apply(f, msg)
		g.applyMu.Unlock()
	}
}

// apply is the single writer of the revocation set (under applyMu).
func (g *Guard) apply(f *feed, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		g.log.Warn("state message without metadata", "subject", msg.Subject(), "err", err)
		return
	}
	now := time.Now()
	if msg.Subject() == events.HeartbeatSubject {
		g.heartbeat(msg.Data(), now)
		if now.Sub(g.lastPrune) > time.Minute {
			g.lastPrune = now
			g.set.Prune(now.Add(-g.cfg.SessionMaxAge).UnixNano())
		}
	} else {
		g.applyRevocation(msg, now)
	}
	seq := meta.Sequence.Stream
	f.applied.Store(seq)
	if f.filter != events.HeartbeatSubject && seq > g.appliedSq.Load() {
		g.appliedSq.Store(seq)
	}
	g.metrics.applied.Inc()
	if meta.NumPending == 0 {
		g.caughtUp(f)
		g.updateStaleness(now)
		g.kickReport()
	}
}

// heartbeat applies a relay heartbeat: every revocation committed before
// its time is applied.
func (g *Guard) heartbeat(data []byte, now time.Time) {
	var hb struct {
		Time time.Time `json:"time"`
	}
	if err := json.Unmarshal(data, &hb); err == nil {
		// The heartbeat's time is evict's clock; never trust it past ours.
		at := min(hb.Time.UnixNano(), now.UnixNano())
		if at > g.syncedAt.Load() {
			g.syncedAt.Store(at)
		}
	}
}

// caughtUp notes that f reached the end of the stream once; the guard is
// ready when every feed has.
func (g *Guard) caughtUp(f *feed) {
	if f.caught {
		return
	}
	f.caught = true
	if g.behind.Add(-1) == 0 {
		g.markReady()
	}
}

func (g *Guard) applyRevocation(msg jetstream.Msg, now time.Time) {
	r, users, err := events.DecodeState(msg.Subject(), msg.Data())
	switch {
	case errors.Is(err, events.ErrUnknownType):
		return
	case err != nil:
		g.log.Warn("state message skipped", "subject", msg.Subject(), "err", err)
		return
	}
	kind, v := entryOf(r)
	changed := false
	if users == nil {
		changed = g.store(kind, r, v)
	}
	// A batch is each of its users' own watermark.
	for _, u := range users {
		r.Kind, r.ID = events.KindUser, u
		changed = g.store(kind, r, v) || changed
	}
	if changed && g.isReady.Load() {
		// Propagation, once the guard is live: a cold start's load is not.
		g.metrics.propagation.Observe(now.Sub(r.EventTime).Seconds())
	}
}

// entryOf is the set's kind and value for r.
func entryOf(r events.Revocation) (kind byte, v int64) {
	v = r.At.UnixNano()
	switch r.Kind {
	case events.KindTenant:
		kind, v = kindTenant, v+999
	case events.KindUser, events.KindUsers:
		kind, v = kindUser, v+999
	case events.KindSession:
		kind = kindSession
	case events.KindDevice:
		kind = kindDevice
	case events.KindTrust:
		kind, v = kindTrust, v+999
	}
	return kind, v
}

// store sets r's entry to v unless it holds a later value, and then ends
// the sessions it revokes. It reports whether the entry changed.
func (g *Guard) store(kind byte, r events.Revocation, v int64) bool {
	if !g.set.Max(kind, r.Tenant, r.ID, v) {
		return false
	}
	if kind != kindDevice && kind != kindTrust { // trust does not end sessions
		g.holds.revoke(g, kind, r.Tenant, r.ID, v, r.OperationID)
	}
	if g.cfg.OnRevocation != nil {
		g.cfg.OnRevocation(r)
	}
	return true
}

func (g *Guard) markReady() {
	g.readyOnce.Do(func() {
		g.isReady.Store(true)
		// Fresh or stale is known before anyone waiting on Ready looks.
		g.updateStaleness(time.Now())
		close(g.ready)
		g.log.Info("revocation state loaded", "entries", g.set.Len(), "sequence", g.appliedSq.Load())
	})
}

func (g *Guard) updateStaleness(now time.Time) {
	synced := g.syncedAt.Load()
	stale := !g.isReady.Load() || synced == 0 || now.Sub(time.Unix(0, synced)) > g.cfg.MaxStaleness
	if g.stale.Swap(stale) != stale {
		if stale {
			g.log.Warn("revocation state is stale", "age", g.StateAge(), "policy", g.cfg.WhenStale)
		} else {
			g.log.Info("revocation state is fresh")
		}
	}
}

// watchStaleness keeps the stale flag current so that Check reads one
// atomic instead of the clock.
func (g *Guard) watchStaleness(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			g.updateStaleness(now)
		}
	}
}

func (p Policy) String() string {
	if p == FailClosed {
		return "fail_closed"
	}
	return "fail_open"
}

// loadSnapshot applies evict's latest snapshot of the state stream and
// returns the stream sequence it covers; 0 when there is none. A snapshot of
// an earlier stream of the same name, or one that does not read back whole,
// is an error, and the guard reads the whole stream.
func (g *Guard) loadSnapshot(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream) (uint64, error) {
	obs, err := js.ObjectStore(ctx, snapshot.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("guard: snapshot: %w", err)
	}
	r, err := obs.Get(ctx, snapshot.Object)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("guard: snapshot: %w", err)
	}
	defer r.Close()
	// Read whole first: the object's digest is checked at its end, and
	// nothing of a snapshot that fails it may be applied.
	data, err := io.ReadAll(r)
	if err != nil {
		return 0, fmt.Errorf("guard: snapshot: %w", err)
	}
	h, err := g.applySnapshot(stream, data)
	if err != nil {
		return 0, err
	}
	g.appliedSq.Store(h.Seq)
	g.metrics.snapshot.Set(float64(h.Entries))
	// The stream after the snapshot may hold no heartbeat yet; the latest
	// one, if the snapshot covers it, vouches for the state all the same.
	if hb, err := stream.GetLastMsgForSubject(ctx, events.HeartbeatSubject); err == nil && hb.Sequence <= h.Seq {
		g.heartbeat(hb.Data, time.Now())
	}
	g.log.InfoContext(ctx, "snapshot loaded", "entries", h.Entries, "sequence", h.Seq)
	return h.Seq, nil
}

// loadTenantSnapshot applies evict's latest snapshot of tenant and returns
// the stream sequence it covers and its entries; it fails with
// snapshot.ErrNoTenantSnapshot when there is none. The heartbeat has a feed
// of its own, read from the start.
func (g *Guard) loadTenantSnapshot(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, tenant string) (seq, entries uint64, err error) {
	data, err := snapshot.ReadTenant(ctx, js, tenant, time.Minute)
	if err != nil {
		return 0, 0, err
	}
	h, err := g.applySnapshot(stream, data)
	if err != nil {
		return 0, 0, err
	}
	g.log.InfoContext(ctx, "tenant snapshot loaded", "tenant", tenant, "entries", h.Entries, "sequence", h.Seq)
	return h.Seq, h.Entries, nil
}

// applySnapshot applies the snapshot in data, read whole and checked, if it
// is of stream.
func (g *Guard) applySnapshot(stream jetstream.Stream, data []byte) (snapshot.Header, error) {
	info := stream.CachedInfo()
	h, each, err := snapshot.ReadHeader(bytes.NewReader(data))
	if err != nil {
		return h, fmt.Errorf("guard: %w", err)
	}
	if info == nil || !h.StreamCreated.Equal(info.Created) || h.Seq > info.State.LastSeq {
		return h, fmt.Errorf("guard: the snapshot (to sequence %d, stream created %s) is not of this stream", h.Seq, h.StreamCreated)
	}
	// Size each kind's table once for what it is about to load; a
	// snapshot that cannot be counted fails in the read below.
	if counts, err := snapshot.CountKinds(data); err == nil {
		for k, n := range counts {
			kind, _ := entryOf(events.Revocation{Kind: k})
			// No feed applies anything yet: this goroutine is the
			// set's writer.
			g.set.Grow(kind, n)
		}
	}
	err = each(func(e snapshot.Entry) error {
		rev := events.Revocation{Kind: e.Kind, Tenant: e.Tenant, ID: e.ID, At: e.At}
		kind, v := entryOf(rev)
		g.store(kind, rev, v)
		return nil
	})
	if err != nil {
		// What was applied is evict's own state, read back whole: it
		// stays, and the stream read from the start covers the rest.
		return h, fmt.Errorf("guard: %w", err)
	}
	return h, nil
}
