package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// feed wakes Server-Sent Events streams when a tenant's sessions change,
// on the hints of internal/wake.
type feed struct {
	mu      sync.Mutex
	waiters map[string]chan struct{} // closed at the tenant's next change
}

func (f *feed) wait(tenant string) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.waiters == nil {
		f.waiters = map[string]chan struct{}{}
	}
	ch := f.waiters[tenant]
	if ch == nil {
		ch = make(chan struct{})
		f.waiters[tenant] = ch
	}
	return ch
}

func (f *feed) wake(tenant string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch := f.waiters[tenant]; ch != nil {
		close(ch)
		delete(f.waiters, tenant)
	}
}

// Run does the API's background work until ctx ends: it writes the audit
// rows of rate-limited authentication failures (see auditSuppressed) and
// records the targets that large commands left for after their commit
// (see recordTargets).
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { s.auditSuppressed(ctx) })
	wg.Go(func() { s.recordTargets(ctx) })
	wg.Wait()
	return nil
}

// changeEvent is the data of one Server-Sent Event.
type changeEvent struct {
	ID        int64           `json:"id"`
	Position  string          `json:"position"`
	Tenant    string          `json:"tenant"`
	UserID    string          `json:"user_id,omitempty"`
	SessionID string          `json:"session_id,omitempty"`
	Kind      string          `json:"kind"`
	At        time.Time       `json:"at"`
	Detail    json.RawMessage `json:"detail"`
}

func (s *Server) streamUserSessions(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant", "user")
	if err != nil {
		return err
	}
	return s.stream(w, r, ids[0], ids[1])
}

func (s *Server) streamTenantSessions(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant")
	if err != nil {
		return err
	}
	return s.stream(w, r, ids[0], "")
}

// stream sends session changes as Server-Sent Events: "started", "seen",
// "revoked", "deferred", "terminated", "ended" and, for the whole tenant,
// "tenant_revoked". Each event's id is its position in the tenant's feed
// (a feedPos); a client that reconnects with Last-Event-ID (or
// ?last_event_id=) gets every change after it, so a dropped connection
// loses nothing. Without one, the stream starts at the present.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, tenant, user string) error {
	ctx := r.Context()
	if err := s.tenantExists(ctx, tenant); err != nil {
		return err
	}
	var last feedPos
	given := false
	// The header wins: a browser's EventSource reconnects to its original URL
	// (with its query) and adds the newest Last-Event-ID header.
	for _, v := range []string{r.URL.Query().Get("last_event_id"), r.Header.Get("Last-Event-ID")} {
		if v == "" {
			continue
		}
		p, err := s.parseFeedPos(ctx, tenant, v)
		if err != nil {
			return err
		}
		last, given = p, true
	}
	if !given {
		// The present: every change of a transaction that has ended is
		// behind; those of transactions still running are ahead.
		if err := s.pool.QueryRow(ctx, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").Scan(&last.tx); err != nil {
			return err
		}
	}
	rc := http.NewResponseController(w)
	// The stream outlives the server's write timeout.
	_ = rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "retry: 1000\n: evict session changes after %s\n\n", last)
	if err := rc.Flush(); err != nil {
		return nil
	}
	sent := time.Now() // the last write, for the keep-alive
	for {
		wake := s.feed.wait(tenant)
		n, held, err := s.sendChanges(ctx, w, tenant, user, &last)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, context.Canceled) {
				return nil
			}
			s.log.WarnContext(ctx, "session stream", "err", err)
			return nil
		}
		if n > 0 {
			if err := rc.Flush(); err != nil {
				return nil
			}
			sent = time.Now()
			continue // there may be more than one page
		}
		// Changes held back behind a transaction still running get no
		// wake-up of their own when it ends: look again shortly.
		retry := time.Until(sent.Add(keepAlive))
		if held {
			retry = min(retry, heldRetry)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-time.After(retry):
			if time.Since(sent) < keepAlive {
				continue
			}
			// A comment keeps proxies from closing an idle stream.
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
			if err := rc.Flush(); err != nil {
				return nil
			}
			sent = time.Now()
		}
	}
}

// heldRetry is how soon a stream looks again at changes held back behind a
// transaction still running; keepAlive how long it stays silent at most.
const (
	heldRetry = 20 * time.Millisecond
	keepAlive = 15 * time.Second
)

// feedPos is a position in a tenant's change feed: the writing
// transaction's id, then the change's id. Feed ids come from a sequence, so
// a transaction that commits late can hold a smaller id than changes
// already sent; ordered by transaction instead, and sent only once every
// transaction before them has ended, the changes after a position are
// final when it is sent. Its text form, the events' id, is "<tx>-<id>".
type feedPos struct{ tx, id int64 }

func (p feedPos) String() string {
	return strconv.FormatInt(p.tx, 10) + "-" + strconv.FormatInt(p.id, 10)
}

// parseFeedPos reads a Last-Event-ID: "<tx>-<id>", or a bare id as streams
// sent before positions named transactions, which resumes after that
// change in its transaction.
func (s *Server) parseFeedPos(ctx context.Context, tenant, v string) (feedPos, error) {
	bad := errorf(http.StatusBadRequest, CodeBadRequest, "Last-Event-ID %q is not an event id of this stream", v)
	txs, ids, found := strings.Cut(v, "-")
	if !found {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil || id < 0 {
			return feedPos{}, bad
		}
		p := feedPos{id: id}
		err = s.pool.QueryRow(ctx, `SELECT coalesce((SELECT tx::text::bigint FROM session_changes
			WHERE tenant_id = $1 AND id <= $2 ORDER BY id DESC LIMIT 1), 0)`, tenant, id).Scan(&p.tx)
		return p, err
	}
	tx, err1 := strconv.ParseInt(txs, 10, 64)
	id, err2 := strconv.ParseInt(ids, 10, 64)
	if err1 != nil || err2 != nil || tx < 0 || id < 0 {
		return feedPos{}, bad
	}
	return feedPos{tx: tx, id: id}, nil
}

// sendChanges writes the next page of changes after *last, those of
// transactions that have all ended; held tells whether changes after them
// were held back behind a transaction still running.
func (s *Server) sendChanges(ctx context.Context, w http.ResponseWriter, tenant, user string, last *feedPos) (n int, held bool, err error) {
	rows, err := s.pool.Query(ctx, `SELECT tx::text::bigint, id, user_id, session_id, kind, at, detail,
			tx < pg_snapshot_xmin(pg_current_snapshot()) AS final
		FROM session_changes
		WHERE tenant_id = $1 AND (tx, id) > ($2::text::xid8, $3) AND ($4 = '' OR user_id = $4 OR kind = 'tenant_revoked')
		ORDER BY tx, id LIMIT 500`, tenant, strconv.FormatInt(last.tx, 10), last.id, user)
	if err != nil {
		return 0, false, err
	}
	type change struct {
		pos   feedPos
		final bool
		ev    changeEvent
	}
	changes, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (c change, err error) {
		err = row.Scan(&c.pos.tx, &c.pos.id, &c.ev.UserID, &c.ev.SessionID, &c.ev.Kind, &c.ev.At, &c.ev.Detail, &c.final)
		c.ev.ID, c.ev.Tenant = c.pos.id, tenant
		return c, err
	})
	if err != nil {
		return 0, false, err
	}
	for _, c := range changes {
		// Later transactions sort after every one still running, so the
		// first change not final ends what may be sent.
		if !c.final {
			return n, true, nil
		}
		c.ev.Position = c.pos.String()
		b, err := json.Marshal(c.ev)
		if err != nil {
			return n, false, err
		}
		if _, err := fmt.Fprintf(w, "id: %s\nevent: %s\ndata: %s\n\n", c.pos, c.ev.Kind, b); err != nil {
			return n, false, err
		}
		*last = c.pos
		n++
	}
	return n, false, nil
}
