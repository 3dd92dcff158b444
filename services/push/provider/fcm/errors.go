package fcm

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/evict-dev/evict/services/push/provider"
)

// Error codes of FCM's FcmError detail and statuses of its error answer that
// the client treats specially.
const (
	CodeUnregistered     = "UNREGISTERED"
	CodeInvalidArgument  = "INVALID_ARGUMENT"
	CodeSenderIDMismatch = "SENDER_ID_MISMATCH"
	CodeQuotaExceeded    = "QUOTA_EXCEEDED"
	CodeUnavailable      = "UNAVAILABLE"
	CodeInternal         = "INTERNAL"
	StatusNotFound       = "NOT_FOUND"
)

const (
	fcmErrorType   = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
	badRequestType = "type.googleapis.com/google.rpc.BadRequest"
)

// errorAnswer is Google's error JSON (google.rpc.Status) with the details
// FCM sends.
type errorAnswer struct {
	Error struct {
		Code    int    `json:"code"`
		Status  string `json:"status"`
		Message string `json:"message"`
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string `json:"errorCode"`
			FieldViolations []struct {
				Field       string `json:"field"`
				Description string `json:"description"`
			} `json:"fieldViolations"`
		} `json:"details"`
	} `json:"error"`
}

// parseError turns an FCM error answer into a *provider.Error. Its Reason is
// the FcmError errorCode when FCM sent one, else the status.
func parseError(status int, body []byte) *provider.Error {
	var a errorAnswer
	_ = json.Unmarshal(body, &a) // a non-JSON answer (a proxy's page) leaves it empty
	e := &provider.Error{Provider: Name, Status: status, Reason: a.Error.Status, Message: a.Error.Message}
	tokenField := false
	for _, d := range a.Error.Details {
		switch d.Type {
		case fcmErrorType:
			if d.ErrorCode != "" {
				e.Reason = d.ErrorCode
			}
		case badRequestType:
			for _, v := range d.FieldViolations {
				tokenField = tokenField || v.Field == "message.token"
			}
		}
	}
	if e.Reason == "" {
		e.Reason = http.StatusText(status)
	}
	e.Kind = classify(status, e.Reason, a.Error.Status, tokenField || mentionsToken(a.Error.Message))
	return e
}

// classify maps an FCM error to what the caller should do, following FCM's
// ErrorCode reference. code is the FcmError errorCode, or the status when
// FCM sent none.
func classify(status int, code, grpcStatus string, aboutToken bool) provider.Kind {
	switch {
	case code == CodeUnregistered || grpcStatus == StatusNotFound || status == http.StatusNotFound:
		return provider.KindTokenInvalid
	case code == CodeInvalidArgument:
		// INVALID_ARGUMENT covers any invalid field; only one about the
		// token means the token is dead.
		if aboutToken {
			return provider.KindTokenInvalid
		}
		return provider.KindPermanent
	case code == CodeSenderIDMismatch:
		// The token belongs to another project. Permanent, but not a
		// token removal: a misconfigured project would otherwise wipe
		// every token.
		return provider.KindPermanent
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return provider.KindAuth
	case status == http.StatusTooManyRequests || status >= 500,
		code == CodeQuotaExceeded || code == CodeUnavailable || code == CodeInternal:
		return provider.KindRetryable
	}
	return provider.KindPermanent
}

// mentionsToken reports whether an INVALID_ARGUMENT message is about the
// registration token. FCM answers a malformed or stale token with
// INVALID_ARGUMENT and the message "The registration token is not a valid FCM
// registration token", without a field violation naming message.token; the
// message is then the only thing that tells it from, say, an invalid TTL.
func mentionsToken(msg string) bool {
	return strings.Contains(strings.ToLower(msg), "registration token")
}
