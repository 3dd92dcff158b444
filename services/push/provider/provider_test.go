package provider_test

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/evict-dev/evict/services/push/provider"
)

func TestErrorMatchesItsSentinel(t *testing.T) {
	t.Parallel()
	sentinels := []error{provider.ErrTokenInvalid, provider.ErrRetryable, provider.ErrAuth}
	tests := []struct {
		kind provider.Kind
		want error // nil: matches none
	}{
		{provider.KindPermanent, nil},
		{provider.KindTokenInvalid, provider.ErrTokenInvalid},
		{provider.KindRetryable, provider.ErrRetryable},
		{provider.KindAuth, provider.ErrAuth},
	}
	for _, tt := range tests {
		t.Run(tt.kind.String(), func(t *testing.T) {
			t.Parallel()
			// Wrapped, as a caller's layer would.
			err := fmt.Errorf("notifier: device d-1: %w", &provider.Error{Provider: "apns", Status: 400, Reason: "X", Kind: tt.kind})
			for _, s := range sentinels {
				if got := errors.Is(err, s); got != (s == tt.want) {
					t.Errorf("errors.Is(%v, %v) = %v", err, s, got)
				}
			}
		})
	}
}

func TestErrorUnwrapsItsCause(t *testing.T) {
	t.Parallel()
	cause := errors.New("connection reset")
	err := &provider.Error{Provider: "fcm", Reason: "network", Kind: provider.KindRetryable, Err: cause}
	if !errors.Is(err, cause) || !errors.Is(err, provider.ErrRetryable) {
		t.Errorf("%v does not match both its cause and ErrRetryable", err)
	}
	if got, want := err.Error(), "fcm: retryable network: connection reset"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		err    error
		want   time.Duration
		wantOK bool
	}{
		{"nil", nil, 0, false},
		{"other error", errors.New("x"), 0, false},
		{"permanent", &provider.Error{Kind: provider.KindPermanent, RetryAfter: time.Second}, 0, false},
		{"retryable without wait", &provider.Error{Kind: provider.KindRetryable}, 0, true},
		{"retryable, wrapped", fmt.Errorf("w: %w", &provider.Error{Kind: provider.KindRetryable, RetryAfter: 30 * time.Second}), 30 * time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := provider.RetryAfter(tt.err)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("RetryAfter = %s, %v; want %s, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestPushData(t *testing.T) {
	t.Parallel()
	p := provider.Push{Token: "t", Tenant: "acme", User: "u-1", EventID: "ev-1"}
	want := map[string]string{"type": "logout", "tenant": "acme", "user": "u-1", "event_id": "ev-1"}
	if got := p.Data(); !reflect.DeepEqual(got, want) {
		t.Errorf("Data() = %v, want %v", got, want)
	}
}

func TestMessageIDIsStablePerEventAndDevice(t *testing.T) {
	t.Parallel()
	a := provider.Push{Token: "t1", EventID: "ev-1"}
	b := a
	b.Token = "t2"
	c := a
	c.EventID = "ev-2"
	if again := a; again.MessageID() != a.MessageID() {
		t.Error("same push, different ids")
	}
	if a.MessageID() == b.MessageID() || a.MessageID() == c.MessageID() {
		t.Error("different devices or events share an id")
	}
	noEvent := provider.Push{Token: "t1"}
	if first := noEvent.MessageID(); first == noEvent.MessageID() {
		t.Error("pushes without an event id share an id")
	}
}
