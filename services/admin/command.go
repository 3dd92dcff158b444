package admin

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/wake"
)

// maxTargetSample is how many target identifiers an operation keeps for
// display; the count is always exact.
const maxTargetSample = 1000

func withPrincipal(ctx context.Context, p principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

func principalFrom(ctx context.Context) principal {
	p, _ := ctx.Value(principalKey{}).(principal)
	return p
}

// op is the state of one command while its transaction runs.
type op struct {
	id      uuid.UUID
	tenant  string
	kind    string
	reason  string
	outbox  []outboxRow
	targets targets
	// later holds the statements whose results the command does not need;
	// run sends them with the operation's own rows in one round trip, the
	// last before the commit.
	later pgx.Batch
	// feed holds the appends to the tenant's session change feed, sent
	// after later; marks is set when later marks sessions revoked
	// (markTargets), which appends their changes to the feed itself.
	// Either tells to wake the tenant's live views.
	feed  pgx.Batch
	marks bool
	// pendingTargets is set when the command left the recording of its
	// targets for after the commit (targets.Defer).
	pendingTargets bool
}

type outboxRow struct {
	eventID uuid.UUID
	subject string
	payload []byte
	// watermarkOf, when set, is the user whose watermark, as the command's
	// transaction stores it, replaces storedWatermark in the payload.
	watermarkOf string
}

// storedWatermark stands in an event for a user's watermark that PostgreSQL
// computes in the command's own transaction, so that the command need not
// wait for it before sending its events (see revokeUser); queueOutbox
// writes the stored value in its place. Its encoding,
// "0001-01-01T00:00:00Z", is not a watermark any event may carry
// (events.DecodeRevocation refuses it), and cannot occur inside a JSON
// string, whose quotes are escaped.
var storedWatermark time.Time

// storedWatermarkJSON is storedWatermark as it appears in a payload.
var storedWatermarkJSON = func() string {
	b, err := json.Marshal(storedWatermark)
	if err != nil {
		panic(err)
	}
	return string(b)
}()

// targets is what a command aimed at, kept with the operation.
type targets struct {
	Tenant     bool     `json:"tenant,omitempty"`
	UserCount  int      `json:"user_count"`
	Users      []string `json:"users,omitempty"`
	Sessions   []string `json:"sessions,omitempty"`
	Group      string   `json:"group,omitempty"`
	UsersAdded int      `json:"users_added,omitempty"`
	UsersKept  int      `json:"users_kept,omitempty"`
	Truncated  bool     `json:"users_truncated,omitempty"`
	Devices    []string `json:"devices,omitempty"`
}

func (o *op) addUsers(users []string) {
	o.targets.UserCount += len(users)
	room := maxTargetSample - len(o.targets.Users)
	if room < len(users) {
		o.targets.Truncated = true
		users = users[:max(room, 0)]
	}
	o.targets.Users = append(o.targets.Users, users...)
}

// emit appends an event to the operation's outbox rows.
func emit[T any](o *op, subject, typ, ceSubject string, at time.Time, data T) error {
	id, err := uuid.NewV7()
	if err != nil {
		return fmt.Errorf("admin: event id: %w", err)
	}
	return emitAs(o, id, subject, typ, ceSubject, at, data)
}

// emitAs is emit with the event's id chosen by the caller, for a subject
// that names it.
func emitAs[T any](o *op, id uuid.UUID, subject, typ, ceSubject string, at time.Time, data T) error {
	b, err := json.Marshal(events.New(id.String(), typ, o.tenant, ceSubject, at, data))
	if err != nil {
		return fmt.Errorf("admin: encode %s: %w", typ, err)
	}
	o.outbox = append(o.outbox, outboxRow{eventID: id, subject: subject, payload: b})
	return nil
}

// emitHistory appends a history event of type typ to the operation.
func emitHistory[T any](o *op, typ, ceSubject string, at time.Time, data T) error {
	subject, err := events.EventSubject(o.tenant, events.Types[typ])
	if err != nil {
		return err
	}
	return emit(o, subject, typ, ceSubject, at, data)
}

// command is one admin command.
type command struct {
	kind   string
	tenant string
	reason string
	// request is hashed to recognize a retry that reuses an Idempotency-Key
	// with a different request.
	request any
	// exec makes the change inside the transaction and returns extra fields
	// of the response (may be nil).
	exec func(ctx context.Context, tx cmdQuerier, o *op) (map[string]any, error)
	// lockKey, when set, names the rows the command locks (its user's),
	// and lets its commit be combined with others' (see combiner).
	lockKey string
}

// maxIdempotencyKey bounds the Idempotency-Key header.
const maxIdempotencyKey = 255

// run executes c in one transaction: the change, the operation with its
// response (for Idempotency-Key replays), an audit row and the outbox rows.
// It answers 202 with the operation id, or replays the first answer of a
// retried Idempotency-Key.
func (s *Server) run(w http.ResponseWriter, r *http.Request, c command) error {
	if err := events.CheckID("tenant", c.tenant); err != nil {
		return err
	}
	if len(c.reason) > 1024 {
		return errorf(http.StatusBadRequest, CodeBadRequest, "reason is longer than 1024 bytes")
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > maxIdempotencyKey {
		return errorf(http.StatusBadRequest, CodeBadRequest, "Idempotency-Key is longer than %d bytes", maxIdempotencyKey)
	}
	// The request's hash is read only by a retry with the same key: a
	// command without one neither computes nor stores it (for a bulk of
	// 100,000 users, 4.1–4.3 ms of encoding and hashing and 1.7 MB).
	var hash []byte
	if key != "" {
		reqJSON, err := json.Marshal(struct {
			Kind, Tenant, Reason string
			Request              any
		}{c.kind, c.tenant, c.reason, c.request})
		if err != nil {
			return fmt.Errorf("admin: hash request: %w", err)
		}
		sum := sha256.Sum256(reqJSON)
		hash = sum[:]
	}
	actor := principalFrom(r.Context()).name
	ip := clientIP(r)

	var status int
	var body []byte
	var pending uuid.NullUUID // the operation, when it left its targets for later
	var hint hints
	err := s.inCmdTx(r.Context(), func(ctx context.Context, tx *cmdTx) error {
		pending, hint = uuid.NullUUID{}, hints{}
		if key != "" {
			var prevHash []byte
			err := tx.QueryRow(ctx, `SELECT request_hash, response_status, response FROM operations
				WHERE tenant_id = $1 AND idempotency_key = $2`, c.tenant, key).Scan(&prevHash, &status, &body)
			if err == nil {
				if string(prevHash) != string(hash) {
					return errorf(http.StatusUnprocessableEntity, CodeIdempotencyReused,
						"Idempotency-Key %q was used for a different request", key)
				}
				return nil
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
		}
		tx.defer_(lockTenantSQL, []any{c.tenant}, func(br pgx.BatchResults) error {
			return tenantLocked(br.QueryRow(), c.tenant)
		})
		id, err := uuid.NewV7()
		if err != nil {
			return err
		}
		o := &op{id: id, tenant: c.tenant, kind: c.kind, reason: c.reason}
		extra, err := c.exec(ctx, tx, o)
		if err != nil {
			return err
		}
		resp := map[string]any{}
		for k, v := range extra {
			resp[k] = v
		}
		resp["operation_id"] = id.String()
		resp["status_url"] = "/v1/operations/" + id.String()
		status = http.StatusAccepted
		if body, err = json.Marshal(resp); err != nil {
			return err
		}
		targetsJSON, err := json.Marshal(o.targets)
		if err != nil {
			return err
		}
		var keyArg any
		if key != "" {
			keyArg = key
		}
		// One round trip for the rest: the statements the command left
		// for later, the operation, its audit row, its events, the feed
		// last, the commit and the wake-ups.
		b := &o.later
		b.Queue(`INSERT INTO operations
			(id, tenant_id, kind, actor, source_ip, reason, idempotency_key, request_hash,
			 response_status, response, targets, event_count, published_at)
			VALUES ($1, $2, $3, $4, $5, nullif($6, ''), $7, $8, $9, $10, $11, $12,
			        CASE WHEN $12 = 0 THEN clock_timestamp() END)`,
			id, c.tenant, c.kind, actor, ip, c.reason, keyArg, hash, status, body, targetsJSON, len(o.outbox))
		b.Queue(`INSERT INTO audit_log (tenant_id, actor, source_ip, action, operation_id, detail, reason)
			VALUES ($1, $2, $3, $4, $5, $6, nullif($7, ''))`,
			c.tenant, actor, ip, c.kind, id, targetsJSON, c.reason)
		handed, err := queueOutbox(b, c.tenant, uuid.NullUUID{UUID: id, Valid: true}, o.outbox)
		if err != nil {
			return err
		}
		for _, q := range o.feed.QueuedQueries {
			b.Queue(q.SQL, q.Arguments...)
		}
		if c.lockKey != "" {
			tx.key = c.tenant + "\x00" + c.lockKey
		}
		before := time.Now()
		if err := tx.commit(ctx, b); err != nil {
			return fmt.Errorf("admin: %s: %w", c.kind, err)
		}
		after := time.Now()
		for i := range handed {
			handed[i].Before, handed[i].After = before, after
		}
		hint = hints{tenant: c.tenant, outbox: len(o.outbox) > 0, handed: handed, sessions: o.feed.Len() > 0 || o.marks}
		pending = uuid.NullUUID{UUID: id, Valid: o.pendingTargets}
		return nil
	})
	if err != nil {
		return err
	}
	s.hint(hint)
	if pending.Valid {
		select {
		case s.pendingTargets <- pending.UUID:
		default: // the recorder is busy; its next round finds the row
		}
	}
	if status == http.StatusAccepted {
		s.metrics.commands.WithLabelValues(c.kind).Inc()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err = w.Write(body)
	return err
}

// lockTenantSQL holds a share lock on the tenant's row for the
// transaction, so that the tenant cannot vanish under a command, and fails
// the transaction when there is no such tenant, with a division by zero
// that tenantLocked reports as such. Failing, not returning no row,
// matters: a command that reads nothing before its commit sends this
// statement in the same round trip as its writes and its COMMIT, which a
// failed statement cancels, and only then reads the answer.
const lockTenantSQL = "SELECT 1 / count(*)::int FROM (SELECT FROM tenants WHERE id = $1 FOR KEY SHARE) t"

// lockTenant runs lockTenantSQL.
func lockTenant(ctx context.Context, tx pgx.Tx, tenant string) error {
	return tenantLocked(tx.QueryRow(ctx, lockTenantSQL, tenant), tenant)
}

// tenantLocked reads the result of lockTenantSQL.
func tenantLocked(row pgx.Row, tenant string) error {
	var one int
	err := row.Scan(&one)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "22012" { // division_by_zero
		return errorf(http.StatusNotFound, CodeTenantNotFound, "tenant %q does not exist; create it with PUT /v1/tenants/%s", tenant, tenant)
	}
	return err
}

// queueOutbox queues the insert of the events of a command of tenant;
// wake the relay with Server.wake once they committed. The rows are written
// last in the transaction, after the row locks that order changes of the
// same state entry were taken. At most one row may wait for a stored
// watermark.
//
// When every row is a state row, it also returns them as the relay
// publishes them, with their seq and payload as stored once b ran, for
// the hint to hand over (internal/wake). Rows of the history stream are
// left to the relay's reads of the outbox, which keep a tenant's history
// in the order of its commands.
func queueOutbox(b *pgx.Batch, tenant string, opID uuid.NullUUID, rows []outboxRow) ([]wake.Row, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	ids := make([]uuid.UUID, len(rows))
	subjects := make([]string, len(rows))
	payloads := make([][]byte, len(rows))
	at, user := 0, "" // the row, counted from 1, that waits for user's watermark
	handOver := true
	for i, r := range rows {
		ids[i], subjects[i], payloads[i] = r.eventID, r.subject, r.payload
		handOver = handOver && strings.HasPrefix(r.subject, events.StatePrefix)
		if r.watermarkOf != "" {
			if at != 0 {
				return nil, errors.New("admin: more than one event of a command waits for a stored watermark")
			}
			at, user = i+1, r.watermarkOf
		}
	}
	var q *pgx.QueuedQuery
	if at == 0 {
		q = b.Queue(`INSERT INTO outbox (event_id, subject, payload, operation_id)
			SELECT e, s, p, $4 FROM unnest($1::uuid[], $2::text[], $3::bytea[]) WITH ORDINALITY AS t(e, s, p, n) ORDER BY n`,
			ids, subjects, payloads, opID)
	} else {
		// The watermark is written as encoding/json writes a time in UTC,
		// but with all six digits of its microseconds; without one, the
		// payload would be NULL, which the table refuses. It is looked up
		// once, not row by row: PostgreSQL planned a lookup per row anew
		// for every command (65 µs), and a join, whose cached generic plan
		// was made while the table was small and never analyzed, read the
		// whole table (400 µs a command once it held 10,000 rows, in
		// evict-bench).
		q = b.Queue(`INSERT INTO outbox (event_id, subject, payload, operation_id)
			SELECT e, s, CASE WHEN n = $5 THEN convert_to(replace(convert_from(p, 'UTF8'), $6, w.nb), 'UTF8') ELSE p END, $4
			FROM unnest($1::uuid[], $2::text[], $3::bytea[]) WITH ORDINALITY AS t(e, s, p, n)
			LEFT JOIN (SELECT '"' || to_char(not_before AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || 'Z"' AS nb
				FROM user_watermarks WHERE tenant_id = $7 AND user_id = $8) w ON true
			ORDER BY n`,
			ids, subjects, payloads, opID, at, storedWatermarkJSON, tenant, user)
	}
	if !handOver {
		return nil, nil
	}
	handed := make([]wake.Row, len(rows))
	for i, r := range rows {
		handed[i] = wake.Row{Operation: opID, EventID: r.eventID, Subject: r.subject, Payload: r.payload}
	}
	// Only the watermark's row comes back with its payload.
	if at == 0 {
		q.SQL += " RETURNING event_id, seq, NULL::bytea"
	} else {
		q.SQL += " RETURNING event_id, seq, CASE WHEN event_id = ($1::uuid[])[$5] THEN payload END"
	}
	q.Query(func(res pgx.Rows) error {
		n := 0
		for res.Next() {
			var id uuid.UUID
			var seq int64
			var payload []byte
			if err := res.Scan(&id, &seq, &payload); err != nil {
				return err
			}
			// Rows come back in the order they were inserted; the id
			// says, rather than trusting that.
			i := slices.IndexFunc(handed, func(h wake.Row) bool { return h.EventID == id })
			if i < 0 || handed[i].Seq != 0 {
				return fmt.Errorf("admin: outbox insert returned event %s, not asked or twice", id)
			}
			handed[i].Seq = seq
			if payload != nil {
				handed[i].Payload = payload
			}
			n++
		}
		if n != len(handed) {
			return fmt.Errorf("admin: outbox insert returned %d rows of %d", n, len(handed))
		}
		return nil
	})
	return handed, nil
}

// hints are what a committed transaction hints (see internal/wake).
type hints struct {
	tenant   string
	outbox   bool       // the relay: new outbox rows …
	handed   []wake.Row // … of which these, as committed
	sessions bool       // the tenant's live session views
}

// hint sends h after its transaction committed. A hint lost to a crash
// right after the commit only delays: the relay polls every second,
// streams look every 15.
func (s *Server) hint(h hints) {
	if h.outbox {
		s.wake.Outbox(h.handed...)
	}
	if h.sessions {
		s.wake.Sessions(h.tenant)
	}
}

// inTx runs fn in a transaction, retried as retryTx says.
func (s *Server) inTx(ctx context.Context, fn func(context.Context, pgx.Tx) error) error {
	return retryTx(func() error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return fn(ctx, tx) })
	})
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
