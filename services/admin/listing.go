package admin

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/evict-dev/evict/events"
)

// Listing limits.
const (
	defaultPageSize = 50
	maxPageSize     = 500
	// totalCap bounds the exact count of a listing: beyond it the total is
	// a lower bound, so that counting never scans a million rows.
	totalCap = 10_000
)

// sessionItem is one live session in a listing.
type sessionItem struct {
	SessionID     string     `json:"session_id"`
	UserID        string     `json:"user_id"`
	Client        string     `json:"client"`
	Holder        *string    `json:"holder,omitempty"`
	DeviceID      *string    `json:"device_id,omitempty"`
	Platform      *string    `json:"platform,omitempty"`
	AppVersion    *string    `json:"app_version,omitempty"`
	IP            *string    `json:"ip,omitempty"`
	UserAgent     *string    `json:"user_agent,omitempty"`
	TrustedDevice bool       `json:"trusted_device"`
	IssuedAt      time.Time  `json:"issued_at"`
	LastSeenAt    time.Time  `json:"last_seen_at"`
	ExpiresAt     *time.Time `json:"expires_at,omitempty"`
}

type sessionPage struct {
	Tenant string        `json:"tenant"`
	Items  []sessionItem `json:"items"`
	// Total counts the sessions matching the filters, exactly up to 10,000;
	// beyond that TotalExact is false and Total is 10,000.
	Total      int    `json:"total"`
	TotalExact bool   `json:"total_exact"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// listFilter is what a listing may filter on.
type listFilter struct {
	tenant, user, prefix, client, holder, group string
	limit                                       int
	afterSeen                                   *time.Time
	afterID                                     string
}

func (s *Server) listUserSessions(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant", "user")
	if err != nil {
		return err
	}
	f, err := parseListFilter(r, ids[0])
	if err != nil {
		return err
	}
	f.user = ids[1]
	return s.listSessions(w, r, f)
}

func (s *Server) listTenantSessions(w http.ResponseWriter, r *http.Request) error {
	ids, err := pathIDs(r, "tenant")
	if err != nil {
		return err
	}
	f, err := parseListFilter(r, ids[0])
	if err != nil {
		return err
	}
	return s.listSessions(w, r, f)
}

func parseListFilter(r *http.Request, tenant string) (listFilter, error) {
	q := r.URL.Query()
	f := listFilter{tenant: tenant, prefix: q.Get("q"), client: q.Get("client"), holder: q.Get("holder"), group: q.Get("group"), limit: defaultPageSize}
	if f.prefix != "" && !events.ValidID(f.prefix) {
		return f, errorf(http.StatusBadRequest, CodeInvalidID, "q: a user id prefix uses identifier characters only")
	}
	for name, v := range map[string]string{"holder": f.holder, "group": f.group} {
		if v != "" && !events.ValidID(v) {
			return f, errorf(http.StatusBadRequest, CodeInvalidID, "%s: not a valid identifier", name)
		}
	}
	if f.client != "" && !clientPattern.MatchString(f.client) {
		return f, errorf(http.StatusBadRequest, CodeBadRequest, "client: not a client kind")
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageSize {
			return f, errorf(http.StatusBadRequest, CodeBadRequest, "limit: want 1 to %d", maxPageSize)
		}
		f.limit = n
	}
	if sort := q.Get("sort"); sort != "" && sort != "-last_seen" {
		return f, errorf(http.StatusBadRequest, CodeBadRequest, `sort: only "-last_seen" (most recently seen first) is supported`)
	}
	if c := q.Get("cursor"); c != "" {
		seen, id, err := decodeCursor(c)
		if err != nil {
			return f, errorf(http.StatusBadRequest, CodeBadRequest, "cursor: %v", err)
		}
		f.afterSeen, f.afterID = &seen, id
	}
	return f, nil
}

// The cursor is the sort key of the last item: last_seen_at and session id.
func encodeCursor(seen time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(seen.UnixMicro(), 10) + "." + id))
}

func decodeCursor(c string) (time.Time, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("malformed")
	}
	us, id, ok := strings.Cut(string(b), ".")
	n, err := strconv.ParseInt(us, 10, 64)
	if !ok || err != nil || !events.ValidID(id) {
		return time.Time{}, "", fmt.Errorf("malformed")
	}
	return time.UnixMicro(n), id, nil
}

// liveSessionsSQL selects a tenant's live sessions: not ended, not revoked
// (directly or by the tenant's or user's watermark), not expired. It walks
// the sessions_live_by_seen (or _by_user) index in last-seen order.
const liveSessionsSQL = `FROM sessions s
	JOIN tenants t ON t.id = s.tenant_id
	WHERE s.tenant_id = $1 AND s.ended_at IS NULL AND s.revoked_at IS NULL
	  AND (s.expires_at IS NULL OR s.expires_at > clock_timestamp())
	  AND (t.not_before IS NULL OR s.issued_at > t.not_before)
	  AND NOT EXISTS (SELECT 1 FROM user_watermarks w
	                  WHERE w.tenant_id = s.tenant_id AND w.user_id = s.user_id AND s.issued_at <= w.not_before)
	  AND ($2 = '' OR s.user_id = $2)
	  AND ($3 = '' OR s.user_id LIKE $3 || '%')
	  AND ($4 = '' OR s.client = $4)
	  AND ($5 = '' OR s.holder = $5)
	  AND ($6 = '' OR EXISTS (SELECT 1 FROM group_members g
	                         WHERE g.tenant_id = s.tenant_id AND g.group_id = $6 AND g.user_id = s.user_id))`

func (s *Server) listSessions(w http.ResponseWriter, r *http.Request, f listFilter) error {
	ctx := r.Context()
	if err := s.tenantExists(ctx, f.tenant); err != nil {
		return err
	}
	page := sessionPage{Tenant: f.tenant, Items: []sessionItem{}}
	// "_" is an identifier character and a LIKE wildcard: escape it.
	prefix := strings.ReplaceAll(f.prefix, "_", `\_`)
	args := []any{f.tenant, f.user, prefix, f.client, f.holder, f.group}
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		// One snapshot for the count and the page.
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM (SELECT 1 "+liveSessionsSQL+" LIMIT $7) c",
			append(args, totalCap+1)...).Scan(&page.Total); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT s.session_id, s.user_id, s.client, s.holder, s.device_id, s.platform, s.app_version,
				s.ip, s.user_agent, s.trusted_device, s.issued_at, s.last_seen_at, s.expires_at `+liveSessionsSQL+`
			  AND ($7::timestamptz IS NULL OR (s.last_seen_at, s.session_id) < ($7, $8))
			ORDER BY s.last_seen_at DESC, s.session_id DESC LIMIT $9`,
			append(args, f.afterSeen, f.afterID, f.limit+1)...)
		if err != nil {
			return err
		}
		page.Items, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (it sessionItem, err error) {
			err = row.Scan(&it.SessionID, &it.UserID, &it.Client, &it.Holder, &it.DeviceID, &it.Platform, &it.AppVersion,
				&it.IP, &it.UserAgent, &it.TrustedDevice, &it.IssuedAt, &it.LastSeenAt, &it.ExpiresAt)
			return it, err
		})
		return err
	})
	if err != nil {
		return err
	}
	page.TotalExact = page.Total <= totalCap
	page.Total = min(page.Total, totalCap)
	if len(page.Items) > f.limit {
		page.Items = page.Items[:f.limit]
		last := page.Items[len(page.Items)-1]
		page.NextCursor = encodeCursor(last.LastSeenAt, last.SessionID)
	}
	return writeCacheable(w, r, page)
}

// writeCacheable answers 200 with an ETag, or 304 when the client's
// If-None-Match already names this body: pollers pay for the query, not
// for the transfer.
func writeCacheable(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "no-cache")
	for _, m := range strings.Split(r.Header.Get("If-None-Match"), ",") {
		// Weak comparison (RFC 9110, 13.1.2): W/"x" matches "x".
		if m = strings.TrimPrefix(strings.TrimSpace(m), "W/"); m == etag || m == "*" {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_, err = w.Write(append(body, '\n'))
	return err
}
