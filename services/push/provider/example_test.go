package provider_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/evict-dev/evict/services/push/provider"
)

// refusing is a Sender whose provider answers every push with err.
type refusing struct{ err error }

func (s refusing) Name() string { return "example" }
func (s refusing) Send(context.Context, provider.Push) (provider.Result, error) {
	return provider.Result{}, s.err
}

// The notifier decides what to do with a failed push from its error alone,
// whatever the provider.
func Example() {
	errs := []error{
		&provider.Error{Provider: "apns", Status: 410, Reason: "Unregistered", Kind: provider.KindTokenInvalid},
		&provider.Error{Provider: "fcm", Status: 429, Reason: "QUOTA_EXCEEDED", Kind: provider.KindRetryable, RetryAfter: time.Minute},
		&provider.Error{Provider: "apns", Status: 403, Reason: "InvalidProviderToken", Kind: provider.KindAuth},
		&provider.Error{Provider: "apns", Status: 413, Reason: "PayloadTooLarge", Kind: provider.KindPermanent},
	}
	for _, e := range errs {
		var s provider.Sender = refusing{e}
		_, err := s.Send(context.Background(), provider.Push{Token: "t", EventID: "ev-1"})
		wait, retry := provider.RetryAfter(err)
		switch {
		case errors.Is(err, provider.ErrTokenInvalid):
			fmt.Println("remove the token:", err)
		case retry:
			fmt.Println("retry in", wait, "(0: own backoff):", err)
		case errors.Is(err, provider.ErrAuth):
			fmt.Println("alert the operator, dead-letter:", err)
		default:
			fmt.Println("dead-letter:", err)
		}
	}
	// Output:
	// remove the token: apns: token_invalid 410 Unregistered
	// retry in 1m0s (0: own backoff): fcm: retryable 429 QUOTA_EXCEEDED (retry after 1m0s)
	// alert the operator, dead-letter: apns: auth 403 InvalidProviderToken
	// dead-letter: apns: permanent 413 PayloadTooLarge
}
