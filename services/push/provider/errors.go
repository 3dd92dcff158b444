package provider

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Sentinel errors a Send error matches with errors.Is.
var (
	// ErrTokenInvalid means the provider will never deliver to this token
	// (APNs 410 Unregistered, 400 BadDeviceToken; FCM UNREGISTERED): remove
	// the token from the device registry instead of retrying.
	ErrTokenInvalid = errors.New("push: device token invalid")
	// ErrRetryable means the push may succeed later (throttling, a provider
	// outage, a network error). The *Error's RetryAfter, when not zero, is
	// the wait the provider asked for.
	ErrRetryable = errors.New("push: retryable")
	// ErrAuth means the provider refused our credentials even after a
	// refresh. It is permanent for this push and, until the configuration is
	// fixed, for every other one of the provider.
	ErrAuth = errors.New("push: provider refused credentials")
)

// Kind classifies an *Error by what the caller should do about it.
type Kind int

// The kinds of Error.
const (
	// KindPermanent: retrying the same push will fail the same way
	// (payload too large, bad topic, ...). Dead-letter it.
	KindPermanent Kind = iota
	// KindTokenInvalid: remove the token. Matches ErrTokenInvalid.
	KindTokenInvalid
	// KindRetryable: retry after RetryAfter or a backoff. Matches ErrRetryable.
	KindRetryable
	// KindAuth: our credentials are refused. Matches ErrAuth.
	KindAuth
)

func (k Kind) String() string {
	switch k {
	case KindPermanent:
		return "permanent"
	case KindTokenInvalid:
		return "token_invalid"
	case KindRetryable:
		return "retryable"
	case KindAuth:
		return "auth"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Error is a push the provider refused or that could not reach it.
type Error struct {
	// Provider is the Sender's Name.
	Provider string
	// Status is the HTTP status; 0 when no answer came (network error).
	Status int
	// Reason is the provider's machine-readable reason: APNs "reason"
	// (BadDeviceToken), FCM errorCode or status (UNREGISTERED), or a reason
	// of ours for failures before an answer ("network", "MissingTopic").
	Reason string
	// Message is the provider's human-readable detail, if any; for logs.
	Message string
	// RetryAfter is the provider's Retry-After; 0 when absent.
	RetryAfter time.Duration
	// Kind says what to do about the error.
	Kind Kind
	// Err is the underlying cause, if any (a network error).
	Err error
}

func (e *Error) Error() string {
	s := e.Provider + ": " + e.Kind.String()
	if e.Status != 0 {
		s += " " + strconv.Itoa(e.Status)
	}
	if e.Reason != "" {
		s += " " + e.Reason
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is reports whether the error's Kind matches target, one of ErrTokenInvalid,
// ErrRetryable and ErrAuth.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrTokenInvalid:
		return e.Kind == KindTokenInvalid
	case ErrRetryable:
		return e.Kind == KindRetryable
	case ErrAuth:
		return e.Kind == KindAuth
	}
	return false
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// RetryAfter returns the wait the provider asked for with err, and whether
// err is retryable at all. A retryable error without Retry-After returns
// (0, true): the caller picks its own backoff.
func RetryAfter(err error) (time.Duration, bool) {
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindRetryable {
		return 0, false
	}
	return e.RetryAfter, true
}
