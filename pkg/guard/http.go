package guard

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
)

type sessionKey struct{}

// SessionFrom returns the session the Middleware checked for this request.
func SessionFrom(ctx context.Context) (Session, bool) {
	s, ok := ctx.Value(sessionKey{}).(Session)
	return s, ok
}

// Middleware checks every request's session before next sees it. sessionOf
// extracts the session (from a cookie, a token...); a request without one
// passes through, for the holder's own authentication to handle.
//
// A revoked session gets 401 with
// {"error":"session_revoked","message":"..."}; with FailClosed and a stale
// state, every session gets 503 with {"error":"revocation_state_stale"}.
// The checked session is available to handlers through SessionFrom, and is
// recorded as seen (see Seen).
func (g *Guard) Middleware(sessionOf func(*http.Request) (Session, bool)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s, ok := sessionOf(r)
			if !ok {
				next.ServeHTTP(w, r)
				return
			}
			if err := g.Check(s); err != nil {
				writeRefusal(w, err)
				g.metrics.rejected.WithLabelValues(reasonOf(err)).Inc()
				return
			}
			g.Seen(s)
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, s)))
		})
	}
}

func reasonOf(err error) string {
	if errors.Is(err, ErrStateStale) {
		return "stale"
	}
	return "revoked"
}

// writeRefusal answers a refused request.
func writeRefusal(w http.ResponseWriter, err error) {
	status, code, msg := http.StatusUnauthorized, "session_revoked", "this session was logged out; sign in again"
	if errors.Is(err, ErrStateStale) {
		status, code, msg = http.StatusServiceUnavailable, "revocation_state_stale", "session state cannot be verified right now; try again shortly"
		w.Header().Set("Retry-After", "5")
	} else {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="session revoked"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "message": msg})
}
