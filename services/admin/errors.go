package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/evict-dev/evict/events"
)

// Error codes are stable strings that clients branch on; the message is for
// humans and may change.
const (
	CodeBadRequest         = "bad_request"
	CodeInvalidID          = "invalid_identifier"
	CodeMalformedJSON      = "malformed_json"
	CodeUnsupportedMedia   = "unsupported_media_type"
	CodeBodyTooLarge       = "body_too_large"
	CodeUnauthorized       = "unauthorized"
	CodeForbidden          = "forbidden"
	CodeTenantNotFound     = "tenant_not_found"
	CodeSessionNotFound    = "session_not_found"
	CodeMemberNotFound     = "member_not_found"
	CodeOperationNotFound  = "operation_not_found"
	CodeNotFound           = "not_found"
	CodeMethodNotAllowed   = "method_not_allowed"
	CodeConflict           = "conflict"
	CodeIdempotencyReused  = "idempotency_key_reused"
	CodeUnprocessable      = "unprocessable"
	CodeInternal           = "internal"
	CodeServiceUnavailable = "unavailable"
	CodeRateLimited        = "rate_limited"
	CodeRequestTimeout     = "request_timeout"
	CodeKeyNotFound        = "key_not_found"
)

// apiError is an error with the HTTP status and code it maps to.
type apiError struct {
	status  int
	code    string
	message string
	cause   error
}

func (e *apiError) Error() string { return e.code + ": " + e.message }
func (e *apiError) Unwrap() error { return e.cause }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// problem is the error body: RFC 9457 problem details with evict's
// "error" and "message" members for clients that only want those two.
type problem struct {
	Type    string `json:"type"`
	Title   string `json:"title"`
	Status  int    `json:"status"`
	Detail  string `json:"detail"`
	Error   string `json:"error"`
	Message string `json:"message"`
}

// writeError is the one place where errors become HTTP statuses.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &mbe):
		ae = errorf(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "request body is larger than %d bytes", mbe.Limit)
	case errors.Is(err, events.ErrInvalidID):
		ae = &apiError{status: http.StatusBadRequest, code: CodeInvalidID, message: err.Error(), cause: err}
	default:
		s.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		ae = errorf(http.StatusInternalServerError, CodeInternal, "internal error")
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(ae.status)
	_ = json.NewEncoder(w).Encode(problem{
		Type:    "https://evict.dev/errors/" + ae.code,
		Title:   http.StatusText(ae.status),
		Status:  ae.status,
		Detail:  ae.message,
		Error:   ae.code,
		Message: ae.message,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
