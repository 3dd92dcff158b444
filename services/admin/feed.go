package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/evict-dev/evict/internal/changes"
)

// feed wakes Server-Sent Events streams when a tenant's sessions change. One
// LISTEN connection serves every stream of the process.
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

func (f *feed) wakeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for t, ch := range f.waiters {
		close(ch)
		delete(f.waiters, t)
	}
}

// Run does the API's background work until ctx ends: it writes the audit
// rows of rate-limited authentication failures (see auditSuppressed),
// records the targets that large commands left for after their commit
// (see recordTargets), and listens for session changes, reconnecting on
// errors.
// Streams also look every 15 seconds (with their keep-alive), so a lost
// notification delays an event but never drops it.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { s.auditSuppressed(ctx) })
	wg.Go(func() { s.recordTargets(ctx) })
	defer wg.Wait()
	for ctx.Err() == nil {
		err := s.listen(ctx)
		if ctx.Err() != nil {
			break
		}
		s.log.WarnContext(ctx, "session change listener", "err", err)
		s.feed.wakeAll()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

func (s *Server) listen(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+changes.Channel); err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		s.feed.wake(n.Payload)
	}
}

// changeEvent is the data of one Server-Sent Event.
type changeEvent struct {
	ID        int64           `json:"id"`
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
// "tenant_revoked". Each event's id is its position in the tenant's feed;
// a client that reconnects with Last-Event-ID (or ?last_event_id=) gets
// every change after it, so a dropped connection loses nothing. Without
// one, the stream starts at the present.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, tenant, user string) error {
	ctx := r.Context()
	if err := s.tenantExists(ctx, tenant); err != nil {
		return err
	}
	last := int64(-1)
	// The header wins: a browser's EventSource reconnects to its original URL
	// (with its query) and adds the newest Last-Event-ID header.
	for _, v := range []string{r.URL.Query().Get("last_event_id"), r.Header.Get("Last-Event-ID")} {
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return errorf(http.StatusBadRequest, CodeBadRequest, "Last-Event-ID %q is not an event id of this stream", v)
		}
		last = n
	}
	if last < 0 {
		if err := s.pool.QueryRow(ctx, "SELECT coalesce(max(id), 0) FROM session_changes WHERE tenant_id = $1", tenant).Scan(&last); err != nil {
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
	fmt.Fprintf(w, "retry: 1000\n: evict session changes after %d\n\n", last)
	if err := rc.Flush(); err != nil {
		return nil
	}
	for {
		wake := s.feed.wait(tenant)
		n, err := s.sendChanges(ctx, w, tenant, user, &last)
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
			continue // there may be more than one page
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-time.After(15 * time.Second):
			// A comment keeps proxies from closing an idle stream.
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
			if err := rc.Flush(); err != nil {
				return nil
			}
		}
	}
}

// sendChanges writes the next page of changes after *last.
func (s *Server) sendChanges(ctx context.Context, w http.ResponseWriter, tenant, user string, last *int64) (int, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, user_id, session_id, kind, at, detail FROM session_changes
		WHERE tenant_id = $1 AND id > $2 AND ($3 = '' OR user_id = $3 OR kind = 'tenant_revoked')
		ORDER BY id LIMIT 500`, tenant, *last, user)
	if err != nil {
		return 0, err
	}
	changes, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (c changeEvent, err error) {
		err = row.Scan(&c.ID, &c.UserID, &c.SessionID, &c.Kind, &c.At, &c.Detail)
		c.Tenant = tenant
		return c, err
	})
	if err != nil {
		return 0, err
	}
	for _, c := range changes {
		b, err := json.Marshal(c)
		if err != nil {
			return 0, err
		}
		if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", c.ID, c.Kind, b); err != nil {
			return 0, err
		}
		*last = c.ID
	}
	return len(changes), nil
}
