// Package admin is evict's admin API: the HTTP front door through which admin
// portals, directory sync and the CLI change memberships and log users out.
// Every command is one PostgreSQL transaction that records the change, an
// operation, an audit row and the outbox rows of its events; the relay
// publishes those to JetStream.
package admin

import (
	"bytes"
	"cmp"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/internal/keys"
	"github.com/evict-dev/evict/internal/wake"
	"github.com/evict-dev/evict/services/registry"
)

// Defaults of Config.
const (
	DefaultMaxBodyBytes = 16 << 20 // 100,000 identifiers of 128 bytes fit
	DefaultMaxBulkUsers = 100_000
)

// Config configures the admin API.
type Config struct {
	// Pool is the PostgreSQL pool; required.
	Pool *pgxpool.Pool
	// AdminToken is the bootstrap bearer token; required.
	AdminToken string
	// MaxBodyBytes limits request bodies; larger ones get 413. Default 16 MiB.
	MaxBodyBytes int64
	// MaxBulkUsers limits the users of one bulk command. Default 100,000.
	MaxBulkUsers int
	// Registerer receives the API's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger; default slog.Default().
	Logger *slog.Logger
	// RateLimit is the sustained requests per second one credential may
	// make; beyond Burst at once it gets 429 with Retry-After. Defaults 50
	// and 200.
	RateLimit float64
	Burst     int
	// OIDC, when set, also accepts access tokens of an identity provider.
	OIDC *OIDC
	// AuthFailureBurst is how many failed authentications one client
	// address may make at once (then one per second) before its failures
	// get 429, unaudited, so that a flood of bad tokens cannot fill the
	// audit log. Valid tokens are not held back. Default 20.
	AuthFailureBurst int
	// Registry computes what operations achieved; required.
	Registry *registry.Registry
	// Ready reports whether the service can take commands (database and
	// NATS reachable); nil means always ready.
	Ready func(*http.Request) error
	// Wake carries hints: a command's, after its commit, to the relay and
	// to the live views of every process; other processes', to this
	// server's live views. nil: a hub of this server alone.
	Wake *wake.Hub
}

// Server serves the admin API.
type Server struct {
	pool     *pgxpool.Pool
	registry *registry.Registry
	feed     feed
	wake     *wake.Hub
	combine  *combiner
	limits   limiter
	failures limiter // failed authentications per client address
	oidc     *OIDC
	// suppressed counts failures answered 429 since the last audit flush.
	suppressed suppressedFailures
	token      []byte
	maxBody    int64
	maxBulk    int
	log        *slog.Logger
	ready      func(*http.Request) error
	metrics    *metrics
	mux        *http.ServeMux
	handler    http.Handler
	// pendingTargets takes the operations that left their targets for
	// after the commit (internal/targets) to Run's recorder.
	pendingTargets chan uuid.UUID
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Pool == nil {
		return nil, errors.New("admin: Config.Pool is required")
	}
	if cfg.Registry == nil {
		return nil, errors.New("admin: Config.Registry is required")
	}
	if cfg.AdminToken == "" {
		return nil, errors.New("admin: Config.AdminToken is required")
	}
	s := &Server{
		pendingTargets: make(chan uuid.UUID, 64),
		pool:           cfg.Pool,
		registry:       cfg.Registry,
		token:          []byte(cfg.AdminToken),
		maxBody:        cfg.MaxBodyBytes,
		maxBulk:        cfg.MaxBulkUsers,
		log:            cfg.Logger,
		ready:          cfg.Ready,
		oidc:           cfg.OIDC,
		metrics:        newMetrics(cfg.Registerer),
		mux:            http.NewServeMux(),
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if s.maxBulk <= 0 {
		s.maxBulk = DefaultMaxBulkUsers
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.combine = &combiner{size: s.metrics.combined}
	s.wake = cfg.Wake
	if s.wake == nil {
		s.wake = wake.New(s.log)
	}
	s.wake.OnSessions(s.feed.wake)
	s.limits = newLimiter(cfg.RateLimit, cfg.Burst)
	s.failures = newLimiter(1, cmp.Or(cfg.AuthFailureBurst, 20))
	s.routes()
	s.handler = s.instrument(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := s.mux.Handler(r); pattern == "" {
			s.unrouted(w, r)
			return
		}
		s.mux.ServeHTTP(w, r)
	}))
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// handlerFunc is a handler that returns its error instead of writing it, so
// that errors become statuses in one place.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (s *Server) routes() {
	auth := func(pattern string, p perm, h handlerFunc) {
		s.mux.Handle(pattern, s.authenticated(p, h))
	}
	open := func(pattern string, h handlerFunc) {
		s.mux.Handle(pattern, s.wrap(h))
	}
	open("GET /healthz", func(w http.ResponseWriter, r *http.Request) error {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return nil
	})
	open("GET /readyz", s.readyz)
	open("GET /v1/openapi.json", func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		_, err := w.Write(openAPI)
		return err
	})

	auth("PUT /v1/tenants/{tenant}", permOperator, s.putTenant)
	auth("GET /v1/tenants/{tenant}", permRead, s.getTenant)

	auth("PUT /v1/tenants/{tenant}/groups/{group}/members/{user}", permMembersWrite, s.addMember)
	auth("DELETE /v1/tenants/{tenant}/groups/{group}/members/{user}", permMembersWrite, s.removeMember)
	auth("PUT /v1/tenants/{tenant}/groups/{group}/members", permMembersWrite, s.setMembers)
	auth("GET /v1/tenants/{tenant}/groups/{group}/members", permMembersRead, s.listMembers)

	auth("POST /v1/tenants/{tenant}/users/{user}/logout", permCommand, s.logoutUser)
	auth("POST /v1/tenants/{tenant}/users/{user}/access-changed", permCommand, s.accessChanged)
	auth("POST /v1/tenants/{tenant}/sessions/{session}/logout", permCommand, s.logoutSession)
	auth("POST /v1/tenants/{tenant}/logout", permCommand, s.logoutTenant)

	auth("GET /v1/tenants/{tenant}/sessions", permRead, s.listTenantSessions)
	auth("GET /v1/tenants/{tenant}/sessions/stream", permRead, s.streamTenantSessions)
	auth("GET /v1/tenants/{tenant}/users/{user}/sessions", permRead, s.listUserSessions)
	auth("GET /v1/tenants/{tenant}/users/{user}/sessions/stream", permRead, s.streamUserSessions)
	auth("POST /v1/tenants/{tenant}/sessions", permCommand, s.registerSession)
	auth("GET /v1/tenants/{tenant}/sessions/{session}", permRead, s.getSession)
	auth("DELETE /v1/tenants/{tenant}/sessions/{session}", permCommand, s.endSession)

	auth("POST /v1/tenants/{tenant}/users/{user}/trusted-devices", permCommand, s.trustDevice)
	auth("GET /v1/tenants/{tenant}/users/{user}/trusted-devices", permRead, s.listTrustedDevices)
	auth("POST /v1/tenants/{tenant}/users/{user}/trusted-devices/revoke", permCommand, s.revokeAllTrust)
	auth("DELETE /v1/tenants/{tenant}/users/{user}/trusted-devices/{device}", permCommand, s.revokeDeviceTrust)

	auth("GET /v1/tenants/{tenant}/audit", permRead, s.listAudit)
	auth("GET /v1/tenants/{tenant}/push/dead-letters", permRead, s.listDeadLetters)

	auth("GET /v1/operations/{id}", permRead, s.getOperation)

	auth("POST /v1/keys", permKeys, s.createKey)
	auth("GET /v1/keys", permKeys, s.listKeys)
	auth("DELETE /v1/keys/{key}", permKeys, s.revokeKey)

}

// unrouted answers what the mux matched no route for, in problem+json: 405
// with Allow when the path exists under other methods, else 404.
func (s *Server) unrouted(w http.ResponseWriter, r *http.Request) {
	rec := httptest.NewRecorder()
	h, _ := s.mux.Handler(r)
	h.ServeHTTP(rec, r)
	if rec.Code == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", rec.Header().Get("Allow"))
		s.writeError(w, r, errorf(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "%s is not allowed on %s; allowed: %s",
			r.Method, r.URL.Path, rec.Header().Get("Allow")))
		return
	}
	s.writeError(w, r, errorf(http.StatusNotFound, CodeNotFound, "no route for %s %s", r.Method, r.URL.Path))
}

//go:embed openapi.json
var openAPI []byte

func (s *Server) wrap(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// principal is who made a request; it is recorded as the actor of commands.
type principal struct {
	name string
	role string
	// allTenants marks the bootstrap token, operator keys and guards (whose
	// NATS credential is the authority).
	allTenants bool
	tenants    []string
}

// allows reports whether the principal may act on tenant.
func (p principal) allows(tenant string) bool {
	return p.allTenants || slices.Contains(p.tenants, tenant)
}

type principalKey struct{}

func (s *Server) authenticated(need perm, h handlerFunc) http.Handler {
	return s.wrap(func(w http.ResponseWriter, r *http.Request) error {
		if preauthenticated(r) {
			return h(w, r)
		}
		p, err := s.authenticate(r)
		if err != nil {
			// A flood of bad tokens from one address must not fill the
			// audit log: past a burst, its failures get 429 and are
			// audited as one counted row per address and second.
			if wait, ok := s.failures.allow(clientIP(r)); !ok {
				s.suppressed.add(clientIP(r))
				w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
				return errorf(http.StatusTooManyRequests, CodeRateLimited, "too many failed authentications from this address; retry after %s", wait.Round(time.Millisecond))
			}
			s.auditDenied(r, principal{name: "anonymous"}, http.StatusUnauthorized, err.Error())
			w.Header().Set("WWW-Authenticate", `Bearer realm="evict", error="invalid_token"`)
			return err
		}
		if !need.allowedFor(p) {
			s.auditDenied(r, p, http.StatusForbidden, "role "+p.role+" may not "+need.String())
			return errorf(http.StatusForbidden, CodeForbidden, "the %s role may not %s", p.role, need)
		}
		if wait, ok := s.limits.allow(p.name); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
			return errorf(http.StatusTooManyRequests, CodeRateLimited, "too many requests for this credential; retry after %s", wait.Round(time.Millisecond))
		}
		// Tenant scope: checked before anything about the tenant is read, so
		// a refusal says nothing about whether it exists.
		if tenant := r.PathValue("tenant"); tenant != "" && !p.allows(tenant) {
			s.auditDenied(r, p, http.StatusForbidden, "tenant outside the credential's scope")
			return errorf(http.StatusForbidden, CodeForbidden, "this credential is not for tenant %q", tenant)
		}
		return h(w, r.WithContext(withPrincipal(r.Context(), p)))
	})
}

// authenticate resolves the bearer token: the bootstrap token (every
// tenant, admin and operator) or an API key.
func (s *Server) authenticate(r *http.Request) (principal, error) {
	// The scheme is case-insensitive (RFC 9110, section 11.1).
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		return principal{}, errorf(http.StatusUnauthorized, CodeUnauthorized, "missing bearer token")
	}
	if subtle.ConstantTimeCompare([]byte(token), s.token) == 1 {
		return principal{name: "bootstrap", role: keys.RoleAdmin, allTenants: true}, nil
	}
	if s.oidc != nil && !strings.HasPrefix(token, keys.TokenPrefix) {
		return s.oidc.principal(r.Context(), token)
	}
	k, err := keys.Lookup(r.Context(), s.pool, token)
	if errors.Is(err, keys.ErrNotFound) {
		return principal{}, errorf(http.StatusUnauthorized, CodeUnauthorized, "invalid, expired or revoked bearer token")
	}
	if err != nil {
		return principal{}, err
	}
	return principal{name: "key:" + k.Name + ":" + k.ID.String(), role: k.Role, allTenants: k.AllTenants, tenants: k.Tenants}, nil
}

// auditDenied records a refused request in the audit log (best effort: a
// refusal must not fail because the log is unreachable).
func (s *Server) auditDenied(r *http.Request, p principal, status int, why string) {
	tenant := r.PathValue("tenant")
	if tenant == "" || !events.ValidID(tenant) {
		tenant = "-"
	}
	detail, _ := json.Marshal(map[string]any{"method": r.Method, "path": r.URL.Path, "status": status, "why": why})
	if _, err := s.pool.Exec(r.Context(), `INSERT INTO audit_log (tenant_id, actor, source_ip, action, detail) VALUES ($1, $2, $3, 'denied', $4)`,
		tenant, p.name, clientIP(r), detail); err != nil {
		s.log.WarnContext(r.Context(), "audit of a denied request failed", "err", err)
	}
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	if s.ready != nil {
		if err := s.ready(r); err != nil {
			// The probe is unauthenticated: the details (hosts, users) go
			// to the log, not to the caller.
			s.log.WarnContext(r.Context(), "not ready", "err", err)
			return errorf(http.StatusServiceUnavailable, CodeServiceUnavailable, "a dependency (PostgreSQL or NATS) is unreachable")
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}

// decode reads a JSON request body into v: the content type must be JSON,
// the body at most maxBody bytes, with no unknown fields and nothing after
// the value. A typo in a field name must not turn "log out these users"
// into "log out nobody".
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return errorf(http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "content type %q is not JSON", ct)
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &mbe):
		return err // 413
	case errors.As(err, &ne) && ne.Timeout():
		// The server's ReadTimeout ended a client that stopped sending.
		return &apiError{status: http.StatusRequestTimeout, code: CodeRequestTimeout, message: "the request body did not arrive in time", cause: err}
	case err != nil:
		return &apiError{status: http.StatusBadRequest, code: CodeBadRequest, message: "the request body could not be read", cause: err}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return &apiError{status: http.StatusBadRequest, code: CodeMalformedJSON, message: "request body is empty", cause: errEmptyBody}
	}
	if err := checkStrictJSON(body); err != nil {
		return &apiError{status: http.StatusBadRequest, code: CodeMalformedJSON, message: "malformed JSON: " + err.Error(), cause: err}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &apiError{status: http.StatusBadRequest, code: CodeMalformedJSON, message: "malformed JSON: " + err.Error(), cause: err}
	}
	return nil
}

// errEmptyBody is the cause of decode's error for a body with no JSON value.
var errEmptyBody = errors.New("empty body")

// decodeOptional is decode for commands whose body may be empty.
func (s *Server) decodeOptional(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	if err := s.decode(w, r, v); !errors.Is(err, errEmptyBody) {
		return err
	}
	return nil
}

// statusRecorder captures the status for metrics.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		route := r.Pattern
		if route == "" || route == "/" {
			route = "unmatched"
		}
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		s.metrics.requests.WithLabelValues(route, strconv.Itoa(rec.status)).Inc()
		s.metrics.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	commands *prometheus.CounterVec
	combined prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evict_http_requests_total",
			Help: "Admin API requests by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "evict_http_request_duration_seconds",
			Help:    "Admin API request duration by route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evict_commands_total",
			Help: "Commands accepted (committed) by kind.",
		}, []string{"kind"}),
		combined: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "evict_command_commit_size",
			Help:    "Commands per commit, of the commands whose commits may be combined (logouts of one user).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.commands, m.combined)
	}
	return m
}
