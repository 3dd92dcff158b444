// Package relay publishes the transactional outbox to JetStream.
//
// Commands write their events into the outbox table in the same transaction
// as the change. The relay publishes them, as it reads them in seq order or
// as the commands of its own process hand them over, with Nats-Msg-Id set
// to the event id, and deletes them once JetStream acknowledged them, so a
// crash at any point loses nothing, and a republish after a crash is dropped
// by JetStream's de-duplication. Several evictd replicas may run the relay:
// a PostgreSQL advisory lock elects one leader, the others stand by. Each
// command hints the leader after its commit (internal/wake), so an event
// leaves within a fraction of a millisecond of its commit; the poll
// interval is only the safety net.
package relay

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/db"
	"github.com/evict-dev/evict/internal/wake"
)

// leaderLock is the advisory lock key held by the leading relay ("evictrel").
const leaderLock = 0x6576696374726c

// Config configures a Relay.
type Config struct {
	// Pool is the PostgreSQL pool; required. The leader also opens two
	// dedicated connections with the pool's settings: one for its rounds,
	// which holds the leader lock, one for settling.
	Pool *pgxpool.Pool
	// JetStream publishes the events; required.
	JetStream jetstream.JetStream
	// Instance names this replica in heartbeats and logs; default host-pid.
	Instance string
	// BatchSize is the most rows read and published at once. Default 1000.
	BatchSize int
	// PollInterval is how often the leader looks at the outbox without a
	// notification. Default 1s.
	PollInterval time.Duration
	// HeartbeatInterval is how often the leader publishes a heartbeat after
	// finding the outbox empty. Default 1s.
	HeartbeatInterval time.Duration
	// StandbyInterval is how often a standby tries to become leader. Default 500ms.
	StandbyInterval time.Duration
	// AckTimeout bounds the wait for JetStream's acknowledgements, and a
	// round that goes on after Run's context ended. Default 10s.
	AckTimeout time.Duration
	// SettleInterval is the longest a published row waits to be deleted
	// and counted on its operation. Default 10ms.
	SettleInterval time.Duration
	// Wake brings the hints that the outbox holds new rows; nil: the
	// relay only polls.
	Wake *wake.Hub
	// Registerer receives the relay's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Relay moves outbox rows to JetStream.
type Relay struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	leading atomic.Bool
	hint    chan struct{} // a round is due: the outbox holds new rows

	mu      sync.Mutex
	handed  []wake.Row // rows handed over by this process's commands
	readDue bool       // a hint came without rows: read the outbox
}

// New returns a Relay for cfg.
func New(cfg Config) (*Relay, error) {
	if cfg.Pool == nil || cfg.JetStream == nil {
		return nil, errors.New("relay: Config.Pool and Config.JetStream are required")
	}
	if cfg.Instance == "" {
		host, _ := os.Hostname()
		cfg.Instance = host + "-" + strconv.Itoa(os.Getpid())
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1000
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = time.Second
	}
	if cfg.StandbyInterval <= 0 {
		cfg.StandbyInterval = 500 * time.Millisecond
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 10 * time.Second
	}
	if cfg.SettleInterval <= 0 {
		cfg.SettleInterval = 10 * time.Millisecond
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	r := &Relay{cfg: cfg, log: log.With("component", "relay", "instance", cfg.Instance), metrics: newMetrics(cfg.Registerer),
		hint: make(chan struct{}, 1)}
	if cfg.Wake != nil {
		cfg.Wake.OnOutbox(func(rows []wake.Row) bool { return r.Hint(rows...) })
	}
	return r, nil
}

// Hint tells the relay that the outbox holds new rows, committed before
// the call, and reports whether it leads. When it does, a round follows:
// it publishes rows, the rows handed over with the hint as they are, or
// the outbox's when the hint brought none; when it does not, the hint is
// for the leader, wherever it runs. A relay that stops leading after it
// said it led leaves the rows to the next leader, whose first round reads
// the outbox.
func (r *Relay) Hint(rows ...wake.Row) bool {
	if !r.leading.Load() {
		return false
	}
	r.mu.Lock()
	switch {
	case len(rows) == 0:
		r.readDue = true
	case len(r.handed)+len(rows) > 4*r.cfg.BatchSize:
		// A leader that fell this far behind reads the outbox instead,
		// which holds them all, in batches.
		r.readDue = true
	default:
		r.handed = append(r.handed, rows...)
	}
	r.mu.Unlock()
	select {
	case r.hint <- struct{}{}:
	default: // a round is due already, and takes whatever came before it
	}
	return true
}

// takeHanded returns the rows handed over since the last round, and
// whether a read of the outbox is due for a hint without rows.
func (r *Relay) takeHanded() (rows []wake.Row, readDue bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rows, readDue = r.handed, r.readDue
	r.handed, r.readDue = nil, false
	return rows, readDue
}

var errStandby = errors.New("relay: another replica leads")

// Run relays until ctx ends. It returns nil on cancellation; the rows it had
// not yet deleted are published again by the next leader and de-duplicated.
func (r *Relay) Run(ctx context.Context) error {
	for {
		err := r.lead(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !errors.Is(err, errStandby) {
			r.log.WarnContext(ctx, "relay lost leadership or failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.cfg.StandbyInterval):
		}
	}
}

// lead takes the leader lock on a dedicated connection and relays until an
// error or cancellation. Closing the connection releases the lock, also
// when the process dies.
func (r *Relay) lead(ctx context.Context) error {
	cfg := r.cfg.Pool.Config().ConnConfig.Copy()
	// The relay's writes need not wait for the WAL flush: a settle lost to
	// a crash only makes the next leader publish its rows again, and
	// JetStream drops them as duplicates of their event ids. Waiting for
	// the flush kept every round, and so every command behind it, a flush
	// longer.
	cfg.RuntimeParams["synchronous_commit"] = "off"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("relay: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	db.RegisterTypes(conn.TypeMap())
	var leader bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", leaderLock).Scan(&leader); err != nil {
		return fmt.Errorf("relay: leader lock: %w", err)
	}
	if !leader {
		return errStandby
	}
	r.log.InfoContext(ctx, "relay is leader")
	r.metrics.leader.Set(1)
	r.leading.Store(true)
	defer func() {
		r.leading.Store(false)
		// Only the leader's outbox gauges are current; a former leader's
		// must not keep an alert firing.
		r.metrics.leader.Set(0)
		r.metrics.backlog.Set(0)
		r.metrics.oldest.Set(0)
	}()

	// Settling runs beside the rounds, on a connection of its own: a round
	// that waited for it kept every hint behind it waiting too, and the
	// settle is the relay's longest statement (0.6 ms at the median at
	// 1,000 commands/s in evict-bench, 1.0 ms once it took the superseded
	// rows along, and 2 to 6 ms at p99).
	//
	// Its statement is planned for its arguments every time (see settle),
	// but prepared once: sent unnamed, it was parsed and analyzed again
	// every round.
	scfg := cfg.Copy()
	scfg.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
	sconn, err := pgx.ConnectConfig(ctx, scfg)
	if err != nil {
		return fmt.Errorf("relay: connect: %w", err)
	}
	defer sconn.Close(context.WithoutCancel(ctx))
	db.RegisterTypes(sconn.TypeMap())
	l := leaderState{mustRead: true, settles: make(chan *unsettled), settled: make(chan error, 1)}
	go func() {
		for u := range l.settles {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.AckTimeout)
			l.settled <- r.settle(sctx, sconn, u)
			cancel()
		}
	}()
	defer func() {
		r.mu.Lock()
		r.handed, r.readDue = nil, false // the next leader reads them
		r.mu.Unlock()
		// What is published is settled on the way out, so that the next
		// leader does not publish it again; if this fails, it does, and
		// JetStream drops the duplicates.
		if err := l.collect(true); err != nil {
			r.log.WarnContext(ctx, "settle", "err", err)
		}
		close(l.settles)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.AckTimeout)
		defer cancel()
		if err := r.settle(sctx, sconn, &l.u); err != nil {
			r.log.WarnContext(ctx, "settle on leaving", "err", err)
		}
	}()
	for {
		drained, err := r.round(ctx, conn, &l)
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !drained {
			continue
		}
		wait := min(r.cfg.PollInterval, r.cfg.HeartbeatInterval-time.Since(l.lastBeat))
		if len(l.u.done) > 0 && l.settling == nil {
			wait = min(wait, r.cfg.SettleInterval-time.Since(l.u.since))
		}
		timer := time.NewTimer(max(wait, time.Millisecond))
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-r.hint:
			timer.Stop()
		case err := <-l.settled:
			timer.Stop()
			if err := l.done(err); err != nil {
				return err
			}
		case <-timer.C:
		}
	}
}

// leaderState is what a leader keeps between its rounds.
type leaderState struct {
	u                   unsettled
	lastBeat, lastStats time.Time
	// readFrom and readTo bound the last read of the outbox: its snapshot
	// was taken between them.
	readFrom, readTo time.Time
	// mustRead makes the next round read the outbox: at the start, after
	// a full batch or a failed publish, and after rows handed over that
	// the last read may have seen.
	mustRead bool
	// handedPub holds, by subject, the last state row published as
	// handed over, until a read that started after its publication has
	// drained the outbox: see publish.
	handedPub map[string]publishedRow
	// settling is the settle in flight, sent on settles; its result
	// comes on settled.
	settling *unsettled
	settles  chan *unsettled
	settled  chan error
}

// settle starts settling l.u, which starts afresh.
func (l *leaderState) settle() {
	u := l.u
	l.u = unsettled{}
	l.settling = &u
	l.settles <- l.settling
}

// collect takes the result of the settle in flight, if any: when it is
// over, or, if wait, once it is.
func (l *leaderState) collect(wait bool) error {
	if l.settling == nil {
		return nil
	}
	if wait {
		return l.done(<-l.settled)
	}
	select {
	case err := <-l.settled:
		return l.done(err)
	default:
		return nil
	}
}

// done ends the settle in flight with its result. The rows of a settle
// that failed are held again, to be settled later.
func (l *leaderState) done(err error) error {
	if err != nil {
		l.u.merge(l.settling)
	}
	l.settling = nil
	return err
}

// held are the rows a read leaves out: published, and not yet deleted.
func (l *leaderState) held() []int64 {
	if l.settling == nil {
		return l.u.seqs()
	}
	return append(slices.Clone(l.settling.done), l.u.done...)
}

type publishedRow struct {
	seq       int64     // outbox seq
	streamSeq uint64    // EVICT_STATE sequence
	at        time.Time // acknowledged
}

// round publishes a batch, and starts a settle, heartbeats and measures the
// outbox when they are due; it reports whether the outbox, or what was
// handed over, was drained. A round runs to its end even when ctx ends,
// bounded by AckTimeout: stopped in the middle of a query, pgx closes the
// connection, and what the leader had published could not be settled on
// its way out.
func (r *Relay) round(ctx context.Context, conn *pgx.Conn, l *leaderState) (drained bool, err error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.AckTimeout)
	defer cancel()
	drained, read, err := r.drain(rctx, conn, l)
	if err != nil {
		return false, err
	}
	now := time.Now()
	if err := l.collect(false); err != nil {
		return false, err
	}
	if l.settling == nil && (len(l.u.done) >= r.cfg.BatchSize/2 || (len(l.u.done) > 0 && now.Sub(l.u.since) >= r.cfg.SettleInterval)) {
		l.settle()
	}
	// Only a read that drained the outbox tells that everything committed
	// before it started is published.
	if drained && read && now.Sub(l.lastBeat) >= r.cfg.HeartbeatInterval {
		if err := r.heartbeat(rctx, l.readFrom); err != nil {
			r.log.WarnContext(ctx, "heartbeat failed", "err", err)
		} else {
			l.lastBeat = now
		}
	}
	if now.Sub(l.lastStats) >= r.cfg.HeartbeatInterval {
		if err := r.stats(rctx, conn); err != nil {
			return false, err
		}
		l.lastStats = now
	}
	return drained, nil
}

// unsettled are the rows published but not yet settled: still in the
// outbox, so each round's read leaves them out. Settling every round cost
// a round trip and a statement planned for its arguments per round, which
// at 500 commands/s is a round per command or two: settling every 10 ms
// took PostgreSQL from 0.57–0.60 to 0.45–0.51 of a core there
// (evict-bench, CPU time from /proc).
type unsettled struct {
	done   []int64     // published rows' seq, in the order settle deletes them
	opIDs  []uuid.UUID // each row's operation, uuid.Nil for none …
	opSeqs []int64     // … and the EVICT_STATE sequence it published
	// The state rows published as handed over, by subject, seq and
	// EVICT_STATE sequence: the rows of their subjects older than them
	// are settled with them (see settle).
	subjects   []string
	subjectSeq []int64
	streamSeq  []int64
	since      time.Time // when the first of them was published
}

func (u *unsettled) add(seq int64, op uuid.NullUUID, stateSeq uint64) {
	if len(u.done) == 0 {
		u.since = time.Now()
	}
	u.done = append(u.done, seq)
	u.opIDs = append(u.opIDs, op.UUID) // uuid.Nil when not Valid
	u.opSeqs = append(u.opSeqs, int64(stateSeq))
}

// supersede notes a state row published as handed over.
func (u *unsettled) supersede(subject string, seq int64, stateSeq uint64) {
	u.subjects = append(u.subjects, subject)
	u.subjectSeq = append(u.subjectSeq, seq)
	u.streamSeq = append(u.streamSeq, int64(stateSeq))
}

// merge adds v's rows to u's.
func (u *unsettled) merge(v *unsettled) {
	if len(u.done) == 0 || v.since.Before(u.since) {
		u.since = v.since
	}
	u.done, u.opIDs, u.opSeqs = append(u.done, v.done...), append(u.opIDs, v.opIDs...), append(u.opSeqs, v.opSeqs...)
	u.subjects = append(u.subjects, v.subjects...)
	u.subjectSeq, u.streamSeq = append(u.subjectSeq, v.subjectSeq...), append(u.streamSeq, v.streamSeq...)
}

// seqs are the held rows' seq as an argument: never NULL, which no seq
// would be unequal to.
func (u *unsettled) seqs() []int64 {
	if u.done == nil {
		return []int64{}
	}
	return u.done
}

type row struct {
	seq       int64
	operation uuid.NullUUID
	eventID   uuid.UUID
	subject   string
	payload   []byte
	createdAt time.Time
}

// drain publishes one batch, and adds to l.u what JetStream acknowledged.
// It reports whether that drained the outbox, or what was handed over,
// and whether it read the outbox.
//
// The rows of this process's commands come handed over with their hints
// (internal/wake): publishing them as they are spares a read of the
// outbox, a round trip and a query, per command; at 1,000 commands/s in
// evict-bench that read was 13 % of the CPU samples of the bench process,
// which runs evictd, its NATS server, the guards and the load
// (docs/benchmarks.md, item 43). The outbox is still read: at the start,
// at least every PollInterval (other processes' commands hint without
// rows, and may not hint at all), when a heartbeat is due, and when a
// handed-over row may already have been read.
func (r *Relay) drain(ctx context.Context, conn *pgx.Conn, l *leaderState) (drained, read bool, err error) {
	handed, readDue := r.takeHanded()
	now := time.Now()
	if readDue || l.mustRead || now.Sub(l.readFrom) >= r.cfg.PollInterval || now.Sub(l.lastBeat) >= r.cfg.HeartbeatInterval {
		// The rows handed over so far committed before this read
		// starts: it reads them.
		drained, err := r.read(ctx, conn, l)
		return drained, true, err
	}
	batch := make([]row, 0, len(handed))
	for _, h := range handed {
		switch {
		case h.Before.After(l.readTo):
			// Committed after the last read's snapshot: no read saw it.
			batch = append(batch, row{seq: h.Seq, operation: h.Operation, eventID: h.EventID,
				subject: h.Subject, payload: h.Payload, createdAt: h.Before})
		case h.After.Before(l.readFrom):
			// Committed before the last read started: that read, or the
			// reads that followed its full batch, published it.
		default:
			// Committed while the last read took its snapshot: it may
			// have seen it or not. The next read tells.
			l.mustRead = true
		}
	}
	if len(batch) == 0 {
		return !l.mustRead, false, nil
	}
	slices.SortFunc(batch, func(a, b row) int { return cmp.Compare(a.seq, b.seq) })
	if err := r.publish(ctx, l, batch, true); err != nil {
		return false, false, err
	}
	return !l.mustRead, false, nil
}

// read publishes the outbox's next batch, but for the rows l.u holds.
func (r *Relay) read(ctx context.Context, conn *pgx.Conn, l *leaderState) (drained bool, err error) {
	l.mustRead = false
	from := time.Now()
	// The rows u holds are left out here rather than after the read: each
	// round read them again, payloads and all, and at 1,000 commands/s the
	// rows read again made most of the relay's garbage (evict-bench
	// -memprofile). "<> ALL" compares each row read with each held seq;
	// a settle starts once half a batch is held, which bounds that to 1.6
	// ms (500 held, EXPLAIN ANALYZE; more while a settle is in flight),
	// in bursts only. An anti-join with
	// the held seqs took 0.35 ms there, but twice as long, 0.05 against
	// 0.025 ms, for the ten or so held at a steady rate, on every round.
	rows, err := conn.Query(ctx, "SELECT seq, operation_id, event_id, subject, payload, created_at FROM outbox WHERE seq <> ALL($2) ORDER BY seq LIMIT $1",
		r.cfg.BatchSize, l.held())
	if err != nil {
		l.mustRead = true
		return false, fmt.Errorf("relay: read outbox: %w", err)
	}
	batch, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (row_ row, err error) {
		err = row.Scan(&row_.seq, &row_.operation, &row_.eventID, &row_.subject, &row_.payload, &row_.createdAt)
		return row_, err
	})
	if err != nil {
		l.mustRead = true
		return false, fmt.Errorf("relay: read outbox: %w", err)
	}
	l.readFrom, l.readTo = from, time.Now()
	full := len(batch) == r.cfg.BatchSize
	if len(batch) > 0 {
		if err := r.publish(ctx, l, batch, false); err != nil {
			return false, err
		}
	}
	if full {
		l.mustRead = true
		return false, nil
	}
	// The outbox is drained as of from: every row committed before the
	// handed-over rows published earlier is published or superseded.
	for subject, p := range l.handedPub {
		if p.at.Before(from) {
			delete(l.handedPub, subject)
		}
	}
	return true, nil
}

// publish publishes batch, in seq order, and adds to l.u the prefix that
// JetStream acknowledged; what follows a failure is published again, in
// order, after the next read.
//
// A state subject keeps only its last message, so a state row is never
// published after a newer row of its subject: where a batch changes one
// entry twice, only the newest is published, and a row older than one
// published as handed over is not published at all. Rows of one subject
// belong to one tenant, whose commands commit one after the other, so a
// row handed over can be published while an older one of its subject,
// handed over late or committed by another process, still waits in the
// outbox; l.handedPub keeps the newer one's mark until a read that
// started after it drained the outbox, by which time every older row was
// read. A superseded row is carried by its successor's message.
func (r *Relay) publish(ctx context.Context, l *leaderState, batch []row, handed bool) error {
	// lastOf is, by state subject, the newest of the batch's rows, or -1
	// when a row published as handed over is newer still.
	lastOf := make(map[string]int, len(batch))
	for i, b := range batch {
		if strings.HasPrefix(b.subject, events.StatePrefix) {
			lastOf[b.subject] = i
		}
	}
	for subject, j := range lastOf {
		if p, ok := l.handedPub[subject]; ok && p.seq > batch[j].seq {
			lastOf[subject] = -1
		}
	}
	futures := make([]jetstream.PubAckFuture, len(batch))
	for i, b := range batch {
		if j, ok := lastOf[b.subject]; ok && j != i {
			continue
		}
		msg := &nats.Msg{Subject: b.subject, Data: b.payload}
		f, err := r.cfg.JetStream.PublishMsgAsync(msg, jetstream.WithMsgID(b.eventID.String()))
		if err != nil {
			r.metrics.errors.Inc()
			l.mustRead = true
			return fmt.Errorf("relay: publish %s: %w", b.eventID, err)
		}
		futures[i] = f
	}
	// Not on ctx: what was acknowledged before a timeout is settled below
	// (or on the leader's way out), not published again.
	timer := time.NewTimer(r.cfg.AckTimeout)
	select {
	case <-r.cfg.JetStream.PublishAsyncComplete():
	case <-timer.C:
	}
	timer.Stop()

	// Settle the acknowledged prefix only.
	stateSeq := make([]uint64, len(batch)) // EVICT_STATE sequence of each row's message
	n := len(batch)
	var failure error
	now := time.Now()
	for i, b := range batch {
		f := futures[i]
		if f == nil {
			continue // superseded
		}
		select {
		case ack := <-f.Ok():
			stream := "state"
			if ack.Stream == events.EventsStream {
				stream = "events"
			} else {
				stateSeq[i] = ack.Sequence
			}
			r.metrics.published.WithLabelValues(stream).Inc()
			// A row handed over counts from its commit, a row read from
			// its transaction's start.
			r.metrics.delay.Observe(now.Sub(b.createdAt).Seconds())
			continue
		case err := <-f.Err():
			failure = fmt.Errorf("relay: publish %s to %s: %w", b.eventID, b.subject, err)
		default:
			failure = fmt.Errorf("relay: publish %s to %s: no acknowledgement within %s", b.eventID, b.subject, r.cfg.AckTimeout)
		}
		n = i
		break
	}
settled:
	for i, b := range batch[:n] {
		seq := stateSeq[i]
		switch j, ok := lastOf[b.subject]; {
		case ok && j == -1:
			seq = l.handedPub[b.subject].streamSeq
		case ok && j != i:
			if j >= n {
				break settled // its successor is not stored yet: keep it for the next read
			}
			seq = stateSeq[j] // a superseded row is carried by its successor
		case ok && handed:
			if l.handedPub == nil {
				l.handedPub = make(map[string]publishedRow)
			}
			l.handedPub[b.subject] = publishedRow{seq: b.seq, streamSeq: seq, at: now}
			l.u.supersede(b.subject, b.seq, seq)
		}
		l.u.add(b.seq, b.operation, seq)
	}
	if failure != nil {
		r.metrics.errors.Inc()
		l.mustRead = true
		return failure
	}
	return nil
}

// settle deletes the rows u holds and records, for each operation, the
// last EVICT_STATE sequence of its events, how many of them left the
// outbox and, once all did, when it was fully published. Only the rows
// deleted here count, so a row settled twice (handed over late, after a
// superseding row took it along) counts once. Guards report the sequence
// they applied; comparing the two tells when a logout is enforced. One
// statement, so one round trip and one transaction. It only reads u, so
// that the rounds may read it meanwhile (leaderState.held).
//
// A state row published as handed over takes along the rows of its
// subject older than it, which it supersedes (see publish): were the
// relay to stop before its next read, the next leader would find them
// and publish them after it. They commit before it, so they are in the
// outbox by now, unless published already.
//
// It is planned for its arguments (its connection's plan_cache_mode is
// force_custom_plan): a cached
// generic plan keeps the row estimates of its first executions, on a young
// database an operations table of a few hundred rows, and joined the batch
// against a sequential scan of the table, which took 1.5 to 9 ms a round
// once the table had grown (evict-bench, 1,000 commands/s). For the same
// reason the rows superseded and the operations are looked up by
// "= ANY(ARRAY(…))", the former by subject in a LATERAL subquery that
// OFFSET 0 keeps from being flattened into a join: estimated from an
// outbox never analyzed, a join read the whole outbox, dead rows and all
// (0.4 ms at 6,000 commands, EXPLAIN ANALYZE in evict-bench), and all of
// operations (5 ms at 30,000), where the lookups take 0.1 ms.
func (r *Relay) settle(ctx context.Context, conn *pgx.Conn, u *unsettled) error {
	if len(u.done) == 0 {
		return nil
	}
	_, err := conn.Exec(ctx, `WITH gone AS (
			DELETE FROM outbox WHERE seq = ANY($1) RETURNING seq
		), superseded AS (
			DELETE FROM outbox WHERE seq = ANY(ARRAY(
				SELECT x.seq FROM unnest($4::text[], $5::bigint[]) AS h(subject, seq),
				LATERAL (SELECT seq FROM outbox WHERE subject = h.subject AND seq < h.seq AND seq <> ALL($1) OFFSET 0) x))
			RETURNING operation_id, subject
		), settled AS (
			SELECT t.id, t.seq FROM unnest($1::bigint[], $2::uuid[], $3::bigint[]) AS t(row_seq, id, seq)
			JOIN gone ON gone.seq = t.row_seq
			WHERE t.id <> '00000000-0000-0000-0000-000000000000'
			UNION ALL
			SELECT s.operation_id, h.seq FROM superseded s
			JOIN (SELECT subject, max(seq) AS seq FROM unnest($4::text[], $6::bigint[]) AS h(subject, seq) GROUP BY subject) h USING (subject)
			WHERE s.operation_id IS NOT NULL
		)
		UPDATE operations o SET
			state_seq = nullif(greatest(coalesce(o.state_seq, 0), v.seq), 0),
			published_events = o.published_events + v.n,
			published_at = CASE WHEN o.published_events + v.n >= o.event_count
				THEN coalesce(o.published_at, clock_timestamp()) END
		FROM (SELECT id, max(seq) AS seq, count(*) AS n FROM settled GROUP BY id) v
		WHERE o.id = v.id AND o.id = ANY(ARRAY(SELECT id FROM settled))`, u.done, u.opIDs, u.opSeqs, u.subjects, u.subjectSeq, u.streamSeq)
	if err != nil {
		return fmt.Errorf("relay: delete published rows and record operation sequences: %w", err)
	}
	return nil
}

// heartbeat publishes a heartbeat of time at: a time before the outbox was
// last read and found drained, so that every revocation committed before
// at is in the stream ahead of it.
func (r *Relay) heartbeat(ctx context.Context, at time.Time) error {
	id, err := uuid.NewV7()
	if err != nil {
		return err
	}
	ev := events.New(id.String(), events.TypeHeartbeat, "", "", at, events.Heartbeat{Instance: r.cfg.Instance})
	ev.Source = "/relay"
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	_, err = r.cfg.JetStream.Publish(ctx, events.HeartbeatSubject, b)
	return err
}

func (r *Relay) stats(ctx context.Context, conn *pgx.Conn) error {
	var n int64
	var oldest float64
	err := conn.QueryRow(ctx, `SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8 FROM outbox`).Scan(&n, &oldest)
	if err != nil {
		return fmt.Errorf("relay: outbox stats: %w", err)
	}
	r.metrics.backlog.Set(float64(n))
	r.metrics.oldest.Set(oldest)
	return nil
}

type metrics struct {
	leader    prometheus.Gauge
	backlog   prometheus.Gauge
	oldest    prometheus.Gauge
	published *prometheus.CounterVec
	errors    prometheus.Counter
	delay     prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "evict_relay_leader", Help: "1 while this replica's relay holds the leader lock."}),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "evict_outbox_backlog", Help: "Outbox rows not yet published (as seen by the leader)."}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "evict_outbox_oldest_pending_seconds", Help: "Age of the oldest unpublished outbox row."}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evict_events_published_total", Help: "Events acknowledged by JetStream, by stream."}, []string{"stream"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "evict_relay_publish_errors_total", Help: "Publish rounds that failed and will be retried."}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "evict_outbox_publish_delay_seconds",
			Help:    "Time from an outbox row's creation to JetStream's acknowledgement.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
		}),
	}
	// Both series exist from the start, at 0: a rate over a series that
	// appears with its first publish misses that publish.
	m.published.WithLabelValues("state")
	m.published.WithLabelValues("events")
	if reg != nil {
		reg.MustRegister(m.leader, m.backlog, m.oldest, m.published, m.errors, m.delay)
	}
	return m
}
