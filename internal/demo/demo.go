// Package demo is a small web backend that enforces evict's logouts with
// pkg/guard: the session holder the walkthrough in README.md uses. It keeps
// its sessions in memory, registers each with evict, and checks every
// request through the guard middleware.
package demo

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/evict-dev/evict/events"
	"github.com/evict-dev/evict/pkg/client"
	"github.com/evict-dev/evict/pkg/guard"
)

// CookieName is the demo's session cookie.
const CookieName = "evict_demo_session"

// App is the demo backend.
type App struct {
	api   *client.Client
	guard *guard.Guard
	log   *slog.Logger

	mu       sync.RWMutex
	sessions map[string]guard.Session
}

// New returns the demo backend. Its sessions are registered with the
// guard's instance as their holder, so evict knows who confirms their logout.
func New(api *client.Client, g *guard.Guard, log *slog.Logger) *App {
	if log == nil {
		log = slog.Default()
	}
	return &App{api: api, guard: g, log: log, sessions: map[string]guard.Session{}}
}

// Handler serves POST /login, GET /me, POST /logout, GET /events (a live
// Server-Sent Events stream that closes when the session is revoked),
// /healthz and /readyz.
func (a *App) Handler() http.Handler {
	protected := http.NewServeMux()
	protected.HandleFunc("GET /me", a.me)
	protected.HandleFunc("POST /logout", a.logout)
	protected.HandleFunc("GET /events", a.events)
	checked := a.guard.Middleware(a.sessionOf)(protected)

	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", a.login)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { reply(w, 200, map[string]string{"status": "ok"}) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := a.guard.Healthy(); err != nil {
			reply(w, http.StatusServiceUnavailable, map[string]string{"error": "not_ready", "message": err.Error()})
			return
		}
		reply(w, 200, map[string]string{"status": "ready"})
	})
	mux.Handle("/", checked)
	return mux
}

// sessionOf finds the request's session from its cookie.
func (a *App) sessionOf(r *http.Request) (guard.Session, bool) {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return guard.Session{}, false
	}
	a.mu.RLock()
	s, ok := a.sessions[c.Value]
	a.mu.RUnlock()
	return s, ok
}

type loginRequest struct {
	Tenant string `json:"tenant"`
	User   string `json:"user"`
}

func (a *App) login(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		reply(w, http.StatusBadRequest, map[string]string{"error": "bad_request", "message": "want {\"tenant\":..., \"user\":...}: " + err.Error()})
		return
	}
	for field, v := range map[string]string{"tenant": req.Tenant, "user": req.User} {
		if err := events.CheckID(field, v); err != nil {
			reply(w, http.StatusBadRequest, map[string]string{"error": "invalid_identifier", "message": err.Error()})
			return
		}
	}
	buf := make([]byte, 18)
	if _, err := rand.Read(buf); err != nil {
		reply(w, http.StatusInternalServerError, map[string]string{"error": "internal"})
		return
	}
	id := base64.RawURLEncoding.EncodeToString(buf)
	reg, err := a.api.RegisterSession(r.Context(), req.Tenant, client.NewSession{
		SessionID: id, UserID: req.User, Client: "web", Holder: a.guard.Instance(), UserAgent: r.UserAgent(),
	})
	var ae *client.APIError
	if errors.As(err, &ae) {
		reply(w, ae.Status, map[string]string{"error": ae.Code, "message": ae.Message})
		return
	}
	if err != nil {
		a.log.ErrorContext(r.Context(), "register session", "err", err)
		reply(w, http.StatusBadGateway, map[string]string{"error": "evict_unavailable", "message": err.Error()})
		return
	}
	s := guard.Session{Tenant: req.Tenant, User: req.User, ID: id, IssuedAt: reg.IssuedAt}
	a.mu.Lock()
	a.sessions[id] = s
	a.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	reply(w, http.StatusOK, map[string]any{"session_id": id, "tenant": s.Tenant, "user": s.User, "issued_at": s.IssuedAt})
}

func (a *App) me(w http.ResponseWriter, r *http.Request) {
	s, ok := guard.SessionFrom(r.Context())
	if !ok {
		reply(w, http.StatusUnauthorized, map[string]string{"error": "not_logged_in", "message": "POST /login first"})
		return
	}
	reply(w, http.StatusOK, map[string]any{"tenant": s.Tenant, "user": s.User, "session_id": s.ID, "issued_at": s.IssuedAt})
}

func (a *App) logout(w http.ResponseWriter, r *http.Request) {
	s, ok := guard.SessionFrom(r.Context())
	if !ok {
		reply(w, http.StatusUnauthorized, map[string]string{"error": "not_logged_in"})
		return
	}
	if _, err := a.api.EndSession(r.Context(), s.Tenant, s.ID); err != nil {
		reply(w, http.StatusBadGateway, map[string]string{"error": "evict_unavailable", "message": err.Error()})
		return
	}
	a.mu.Lock()
	delete(a.sessions, s.ID)
	a.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1})
	reply(w, http.StatusOK, map[string]string{"status": "logged_out"})
}

// events is a live connection: it ticks every second and ends with a
// "revoked" event the moment the guard applies the session's revocation.
func (a *App) events(w http.ResponseWriter, r *http.Request) {
	s, ok := guard.SessionFrom(r.Context())
	if !ok {
		reply(w, http.StatusUnauthorized, map[string]string{"error": "not_logged_in"})
		return
	}
	ctx, release := a.guard.Hold(r.Context(), s)
	defer release()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	rc := http.NewResponseController(w)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	fmt.Fprintf(w, "event: hello\ndata: {\"user\":%q}\n\n", s.User)
	_ = rc.Flush()
	for {
		select {
		case <-ctx.Done():
			if errors.Is(context.Cause(ctx), guard.ErrSessionRevoked) {
				fmt.Fprint(w, "event: revoked\ndata: {\"error\":\"session_revoked\"}\n\n")
				_ = rc.Flush()
			}
			return
		case now := <-t.C:
			fmt.Fprintf(w, "event: tick\ndata: %q\n\n", now.UTC().Format(time.RFC3339))
			_ = rc.Flush()
		}
	}
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
