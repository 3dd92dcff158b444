// Package notifier pushes logouts to mobile devices, so that an app drops
// its session at once instead of when the user next opens it.
//
// It consumes revocations from EVICT_STATE with a durable JetStream
// consumer shared by every replica, expands each into one delivery per
// device (a row in push_deliveries, keyed by event id, provider and token:
// a redelivered event or two sessions on one device still make one push),
// acknowledges the message, and lets workers on every replica claim due
// deliveries with FOR UPDATE SKIP LOCKED and a lease. A tenant-wide logout
// is expanded in the database, page by page, never loaded into memory.
package notifier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/bus"
	"github.com/evict-dev/evict/services/push/provider"
)

// ConsumerName is the durable consumer all notifier replicas share.
const ConsumerName = bus.NotifierDurable

// Config configures a Notifier.
type Config struct {
	// Pool, JetStream and Senders are required. Senders maps a provider
	// name as registered on sessions ("apns", "fcm", "webhook") to its
	// client; pushes for a provider without a sender fail permanently.
	Pool      *pgxpool.Pool
	JetStream jetstream.JetStream
	Senders   map[string]provider.Sender
	// Instance names this replica in leases; default host-pid.
	Instance string
	// Workers is the number of concurrent sends per replica. Default 32.
	Workers int
	// MaxAttempts before a retryable failure becomes a dead letter. Default 8.
	MaxAttempts int
	// RetryBackoff is the wait before the first retry, doubled for each
	// further one up to 512 times; a provider's Retry-After, when longer,
	// wins. Default 2s.
	RetryBackoff time.Duration
	// Lease is how long a claimed delivery is this replica's; a replica
	// that dies mid-send leaves it to others after the lease. A send is
	// given a third of it, and begins only while two thirds remain, so
	// that it is answered and recorded before the lease ends. Default 30s.
	Lease time.Duration
	// Expiration is how long a provider may keep trying to deliver. Default 1h.
	Expiration time.Duration
	// Registerer receives the notifier's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Notifier expands logouts into device pushes and sends them.
type Notifier struct {
	cfg     Config
	log     *slog.Logger
	wake    chan struct{}
	records chan pendingRecord
	metrics *metrics
}

// New returns a Notifier for cfg.
func New(cfg Config) (*Notifier, error) {
	if cfg.Pool == nil || cfg.JetStream == nil || len(cfg.Senders) == 0 {
		return nil, errors.New("notifier: Config.Pool, JetStream and at least one sender are required")
	}
	if cfg.Instance == "" {
		host, _ := os.Hostname()
		cfg.Instance = host + "-" + strconv.Itoa(os.Getpid())
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 32
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 8
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = 2 * time.Second
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.Expiration <= 0 {
		cfg.Expiration = time.Hour
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Notifier{cfg: cfg, log: log.With("component", "notifier", "instance", cfg.Instance),
		wake: make(chan struct{}, 1), metrics: newMetrics(cfg.Registerer)}, nil
}

// ConsumerConfig is the durable consumer all notifier replicas share: the
// logouts that end sessions (tenant, user, session), from now on.
func ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: ConsumerName,
		FilterSubjects: []string{
			events.StatePrefix + "*." + events.KindTenant,
			events.StatePrefix + "*." + events.KindUser + ".*",
			events.StatePrefix + "*." + events.KindUsers + ".*",
			events.StatePrefix + "*." + events.KindSession + ".*",
		},
		// Created now, it starts now: history needs no pushes.
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 256,
		MaxDeliver:    -1,
	}
}

// Run consumes and sends until ctx ends, then drains: it claims nothing
// more, finishes and records the sends under way, releases the deliveries
// it claimed but did not send, and returns. Nothing it handed to a provider
// is left unrecorded, so nothing is sent again because it stopped.
func (n *Notifier) Run(ctx context.Context) error {
	cons, err := n.cfg.JetStream.CreateOrUpdateConsumer(ctx, events.StateStream, ConsumerConfig())
	if err != nil {
		return fmt.Errorf("notifier: consumer: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { n.expand(ctx, m) })
	if err != nil {
		return fmt.Errorf("notifier: consume: %w", err)
	}
	defer cc.Stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.watchConsumer(ctx, cons)
	}()
	// The recorder outlives the workers: it records their last outcomes
	// while they drain, and stops once they all have returned.
	n.records = make(chan pendingRecord)
	recorded := make(chan struct{})
	go func() {
		defer close(recorded)
		n.recordOutcomes(context.WithoutCancel(ctx))
	}()
	var workers sync.WaitGroup
	for i := 0; i < n.cfg.Workers; i++ {
		workers.Add(1)
		go func() {
			defer workers.Done()
			n.work(ctx)
		}()
	}
	workers.Wait()
	close(n.records)
	<-recorded
	wg.Wait()
	return nil
}

// expand turns one revocation into deliveries, then acknowledges it. On a
// database error the message is redelivered; the primary key makes the
// retry harmless.
func (n *Notifier) expand(ctx context.Context, m jetstream.Msg) {
	r, users, err := events.DecodeState(m.Subject(), m.Data())
	if err != nil {
		n.log.Warn("state message skipped", "subject", m.Subject(), "err", err)
		_ = m.Term()
		return
	}
	eventID, err := uuid.Parse(r.EventID)
	if err != nil {
		_ = m.Term()
		return
	}
	var opID uuid.NullUUID
	if id, err := uuid.Parse(r.OperationID); err == nil {
		opID = uuid.NullUUID{UUID: id, Valid: true}
	}
	// Sessions the revocation covers that have a push target; ended ones
	// only if this very operation ended them.
	const insert = `INSERT INTO push_deliveries (event_id, provider, token, tenant_id, user_id, session_id, topic, operation_id, event_time)
		SELECT DISTINCT ON (push_provider, push_token) $1::uuid, push_provider, push_token, tenant_id, user_id, session_id, push_topic, $2::uuid, $3::timestamptz
		FROM sessions
		WHERE push_token IS NOT NULL AND tenant_id = $4 AND %s
		  AND (revoked_at IS NULL OR revoke_operation = $2::uuid OR revoked_at >= $3::timestamptz - interval '1 minute')
		  AND (ended_at IS NULL OR revoke_operation = $2::uuid)
		ORDER BY push_provider, push_token, session_id
		ON CONFLICT DO NOTHING`
	args := []any{eventID, opID, r.EventTime, r.Tenant}
	switch r.Kind {
	case events.KindSession:
		_, err = n.cfg.Pool.Exec(ctx, fmt.Sprintf(insert, "session_id = $5"), append(args, r.ID)...)
	case events.KindUser:
		_, err = n.cfg.Pool.Exec(ctx, fmt.Sprintf(insert, "user_id = $5 AND issued_at <= $6"), append(args, r.ID, r.At)...)
	case events.KindUsers:
		_, err = n.cfg.Pool.Exec(ctx, fmt.Sprintf(insert, "user_id = ANY($5) AND issued_at <= $6"), append(args, users, r.At)...)
	case events.KindTenant:
		err = n.expandTenant(ctx, m, fmt.Sprintf(insert, "issued_at <= $5 AND session_id > $6 AND session_id <= $7"), args, r.At)
	default:
		_ = m.Ack()
		return
	}
	if err != nil {
		n.log.Warn("expand revocation", "subject", m.Subject(), "err", err)
		_ = m.NakWithDelay(time.Second)
		return
	}
	n.metrics.events.Inc()
	_ = m.Ack()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// expandTenant expands a tenant-wide logout in pages of session ids, so
// that no statement, and no memory here, holds the whole tenant.
func (n *Notifier) expandTenant(ctx context.Context, m jetstream.Msg, insert string, args []any, nb time.Time) error {
	const page = 5000
	after := ""
	for {
		var upto *string
		err := n.cfg.Pool.QueryRow(ctx, `SELECT max(session_id) FROM (SELECT session_id FROM sessions
			WHERE tenant_id = $1 AND push_token IS NOT NULL AND session_id > $2 ORDER BY session_id LIMIT $3) p`,
			args[3], after, page).Scan(&upto)
		if err != nil {
			return err
		}
		if upto == nil {
			return nil
		}
		if _, err := n.cfg.Pool.Exec(ctx, insert, append(args, nb, after, *upto)...); err != nil {
			return err
		}
		after = *upto
		_ = m.InProgress()
		select {
		case n.wake <- struct{}{}:
		default:
		}
	}
}

type delivery struct {
	eventID                    uuid.UUID
	providerName, token, topic string
	tenant, user, session      string
	operation                  uuid.NullUUID
	eventTime                  time.Time
	attempts                   int
	// claimedUntil is the lease as the claim wrote it: a release matches
	// it, so that it never touches a delivery another claim took since.
	claimedUntil time.Time
}

// claimBatch is how many deliveries a worker claims at once: one claim
// round trip then serves that many pushes. Claimed but unsent deliveries
// are released when the notifier stops, and left to the lease when it dies.
const claimBatch = 16

// work claims due deliveries and sends them until ctx ends.
func (n *Notifier) work(ctx context.Context) {
	for ctx.Err() == nil {
		start := time.Now()
		// Not canceled with ctx: a claim cut off after the database ran it
		// would leave deliveries claimed that no worker knows of until
		// their lease ends. If ctx ends meanwhile, sendBatch releases them.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.Lease/3)
		batch, err := n.claim(cctx)
		cancel()
		if err != nil {
			n.log.Warn("claim deliveries", "err", err)
		}
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
			case <-n.wake:
				// Pass the wake-up on: other idle workers have work too.
				select {
				case n.wake <- struct{}{}:
				default:
				}
			case <-time.After(250 * time.Millisecond):
			}
			continue
		}
		// The lease began no earlier than start: measured from there, the
		// local deadline is never later than the one other replicas see.
		n.sendBatch(ctx, batch, start.Add(n.cfg.Lease))
	}
}

// sendBatch sends the claimed deliveries one at a time and records each
// outcome before the next send (see finish), so that a replica killed
// mid-batch leaves at most one push per worker accepted by the provider but
// unrecorded.
//
// A send begins only while two thirds of the lease remain and is given a
// third: it and its record end before the lease does, so no other replica
// can claim a delivery while it is being sent. A send that has begun is
// finished and recorded even when ctx ends; then, or when the lease runs
// short, the rest of the batch is released for any replica to claim at once.
func (n *Notifier) sendBatch(ctx context.Context, batch []delivery, leaseEnd time.Time) {
	step := n.cfg.Lease / 3
	// Outlives ctx: stopping must not abandon a push the provider may
	// already have accepted.
	bg := context.WithoutCancel(ctx)
	for i, d := range batch {
		if ctx.Err() != nil || time.Until(leaseEnd) < 2*step {
			n.release(bg, batch[i:])
			return
		}
		sctx, cancel := context.WithTimeout(bg, step)
		o := n.send(sctx, d)
		cancel()
		n.finish(o)
	}
}

// claim takes up to claimBatch due deliveries: pending and due, or sending
// with an expired lease (their replica died).
func (n *Notifier) claim(ctx context.Context) ([]delivery, error) {
	rows, err := n.cfg.Pool.Query(ctx, `UPDATE push_deliveries p SET status = 'sending', attempts = p.attempts + 1,
			claimed_until = clock_timestamp() + $1::interval, claimed_by = $2
		FROM (SELECT event_id, provider, token FROM push_deliveries
			WHERE (status = 'pending' AND next_attempt_at <= clock_timestamp())
			   OR (status = 'sending' AND claimed_until < clock_timestamp())
			ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) c
		WHERE p.event_id = c.event_id AND p.provider = c.provider AND p.token = c.token
		RETURNING p.event_id, p.provider, p.token, coalesce(p.topic, ''), p.tenant_id, p.user_id, p.session_id,
			p.operation_id, p.event_time, p.attempts, p.claimed_until`,
		fmt.Sprintf("%d milliseconds", n.cfg.Lease.Milliseconds()), n.cfg.Instance, claimBatch)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (d delivery, err error) {
		err = row.Scan(&d.eventID, &d.providerName, &d.token, &d.topic, &d.tenant, &d.user, &d.session, &d.operation,
			&d.eventTime, &d.attempts, &d.claimedUntil)
		return d, err
	})
}

// release hands claimed deliveries that were not sent back to the queue,
// due at once, as if never claimed.
func (n *Notifier) release(ctx context.Context, ds []delivery) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.Lease/3)
	defer cancel()
	ids, providers, tokens, until := make([]uuid.UUID, len(ds)), make([]string, len(ds)), make([]string, len(ds)), make([]time.Time, len(ds))
	for i, d := range ds {
		ids[i], providers[i], tokens[i], until[i] = d.eventID, d.providerName, d.token, d.claimedUntil
	}
	_, err := n.cfg.Pool.Exec(ctx, `UPDATE push_deliveries p SET status = 'pending', attempts = p.attempts - 1,
			claimed_until = NULL, claimed_by = NULL
		FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[]) AS r(event_id, provider, token, claimed_until)
		WHERE p.event_id = r.event_id AND p.provider = r.provider AND p.token = r.token
		  AND p.status = 'sending' AND p.claimed_until = r.claimed_until`, ids, providers, tokens, until)
	if err != nil {
		// Harmless: the lease hands them out when it ends.
		n.log.Warn("release claimed deliveries", "err", err, "deliveries", len(ds))
	}
}

// outcome is what became of one delivery.
type outcome struct {
	d          delivery
	status     string
	providerID string
	lastErr    string
	retryIn    time.Duration
}

// send makes one attempt, bounded by ctx, and classifies its outcome.
func (n *Notifier) send(ctx context.Context, d delivery) outcome {
	o := outcome{d: d}
	sender, ok := n.cfg.Senders[d.providerName]
	if !ok {
		o.status, o.lastErr = "failed", fmt.Sprintf("no %s provider configured", d.providerName)
		return o
	}
	p := provider.Push{Token: d.token, Topic: d.topic, CollapseID: "evict-logout",
		Tenant: d.tenant, User: d.user, Session: d.session, EventID: d.eventID.String(),
		Expiration: d.eventTime.Add(n.cfg.Expiration)}
	if d.operation.Valid {
		p.OperationID = d.operation.UUID.String()
	}
	res, err := sender.Send(ctx, p)
	// The provider did not answer in time; it may still have accepted the
	// push, and a retry carries the same message id.
	timedOut := errors.Is(err, context.DeadlineExceeded)
	switch {
	case err == nil:
		n.metrics.latency.WithLabelValues(d.providerName).Observe(time.Since(d.eventTime).Seconds())
		o.status, o.providerID = "pushed", res.ProviderID
	case errors.Is(err, provider.ErrTokenInvalid):
		o.status, o.providerID, o.lastErr = "token_removed", res.ProviderID, err.Error()
	case (timedOut || errors.Is(err, provider.ErrRetryable)) && d.attempts < n.cfg.MaxAttempts:
		wait := n.cfg.RetryBackoff << min(d.attempts-1, 9)
		if after, ok := provider.RetryAfter(err); ok && after > wait {
			wait = after
		}
		n.metrics.retries.WithLabelValues(d.providerName).Inc()
		o.status, o.lastErr, o.retryIn = "pending", err.Error(), wait
	case timedOut || errors.Is(err, provider.ErrRetryable):
		o.status, o.lastErr = "dead", err.Error()
	default:
		o.status, o.lastErr = "failed", err.Error()
	}
	n.metrics.pushes.WithLabelValues(d.providerName, o.status).Inc()
	return o
}

// pendingRecord is an outcome handed to the recorder; done is closed once
// it is committed, or failed to be.
type pendingRecord struct {
	o    outcome
	done chan struct{}
}

// finish hands an outcome to the recorder and returns once it is recorded.
// Workers wait for their own record before their next send, so a replica
// killed at any moment leaves at most one accepted push per worker
// unrecorded; the recorder still commits the outcomes of all workers that
// wait at once in one statement (group commit).
func (n *Notifier) finish(o outcome) {
	r := pendingRecord{o: o, done: make(chan struct{})}
	n.records <- r
	<-r.done
}

// recordOutcomes commits the outcomes workers hand over until records is
// closed: each round takes all that are waiting.
func (n *Notifier) recordOutcomes(ctx context.Context) {
	batch := make([]pendingRecord, 0, n.cfg.Workers)
	for r := range n.records {
		batch = append(batch[:0], r)
	more:
		for len(batch) < cap(batch) {
			select {
			case r, ok := <-n.records:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		rctx, cancel := context.WithTimeout(ctx, n.cfg.Lease/3)
		if err := n.record(rctx, batch); err != nil {
			// The lease hands the deliveries out again: they are sent once more.
			n.log.Warn("record push outcomes", "err", err, "deliveries", len(batch))
		}
		cancel()
		for _, r := range batch {
			close(r.done)
		}
	}
}

// record writes outcomes; a removed token is cleared from every session
// that carries it, in the same transaction.
func (n *Notifier) record(ctx context.Context, batch []pendingRecord) error {
	k := len(batch)
	ids, providers, tokens := make([]uuid.UUID, k), make([]string, k), make([]string, k)
	statuses, providerIDs, lastErrs, retryMS := make([]string, k), make([]string, k), make([]string, k), make([]int64, k)
	var removedProviders, removedTokens []string
	for i, r := range batch {
		o := r.o
		ids[i], providers[i], tokens[i] = o.d.eventID, o.d.providerName, o.d.token
		statuses[i], providerIDs[i], lastErrs[i], retryMS[i] = o.status, o.providerID, o.lastErr, o.retryIn.Milliseconds()
		if o.status == "token_removed" {
			removedProviders, removedTokens = append(removedProviders, o.d.providerName), append(removedTokens, o.d.token)
		}
	}
	const update = `UPDATE push_deliveries p SET status = r.status, provider_id = nullif(r.provider_id, ''),
			last_error = nullif(r.last_error, ''),
			pushed_at = CASE WHEN r.status = 'pushed' THEN clock_timestamp() END,
			next_attempt_at = clock_timestamp() + r.retry_ms * interval '1 millisecond', claimed_until = NULL
		FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[])
			AS r(event_id, provider, token, status, provider_id, last_error, retry_ms)
		WHERE p.event_id = r.event_id AND p.provider = r.provider AND p.token = r.token`
	args := []any{ids, providers, tokens, statuses, providerIDs, lastErrs, retryMS}
	if len(removedTokens) == 0 {
		_, err := n.cfg.Pool.Exec(ctx, update, args...)
		return err
	}
	return pgx.BeginFunc(ctx, n.cfg.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, update, args...); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE sessions s SET push_token = NULL
			FROM unnest($1::text[], $2::text[]) AS r(provider, token)
			WHERE s.push_provider = r.provider AND s.push_token = r.token`, removedProviders, removedTokens)
		return err
	})
}

// watchConsumer keeps the consumer's backlog gauge current.
func (n *Notifier) watchConsumer(ctx context.Context, cons jetstream.Consumer) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if info, err := cons.Info(ctx); err == nil {
				n.metrics.pending.Set(float64(info.NumPending + uint64(info.NumAckPending)))
			}
		}
	}
}

type metrics struct {
	pending prometheus.Gauge
	events  prometheus.Counter
	pushes  *prometheus.CounterVec
	retries *prometheus.CounterVec
	latency *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "evict_push_consumer_pending", Help: "Revocations the push consumer has not yet expanded (pending and unacknowledged)."}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "evict_push_events_total", Help: "Revocations expanded into device pushes."}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evict_pushes_total", Help: "Push attempts by provider and outcome (pushed, pending, token_removed, failed, dead)."},
			[]string{"provider", "result"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evict_push_retries_total", Help: "Push attempts scheduled for retry."}, []string{"provider"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "evict_push_latency_seconds",
			Help:    "Time from a revocation's commit to the provider's acceptance of its push.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"provider"}),
	}
	if reg != nil {
		reg.MustRegister(m.pending, m.events, m.pushes, m.retries, m.latency)
	}
	return m
}
