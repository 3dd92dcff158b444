package webhook

import (
	"crypto/hmac"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DefaultTolerance is how far a webhook-timestamp may be from the receiver's
// clock, either way, as the Standard Webhooks libraries default to.
const DefaultTolerance = 5 * time.Minute

// Errors of Verify.
var (
	// ErrInvalidSignature: no v1 signature of the request matches the
	// secret, or the headers are missing. The body is not to be trusted.
	ErrInvalidSignature = errors.New("webhook: invalid signature")
	// ErrInvalidTimestamp: webhook-timestamp is missing, not a number, or
	// further than the tolerance from now; a replay of an old request is
	// refused this way.
	ErrInvalidTimestamp = errors.New("webhook: invalid timestamp")
)

// Verify checks that body and header come from a sender holding secret (in
// the "whsec_" form of Config.Secret) and were sent within tolerance of now
// (0 means DefaultTolerance). A receiver calls it on the raw body before
// decoding it as an Event, and drops requests whose webhook-id it has already
// handled. Any one of several space-separated signatures may match, so the
// sender can rotate secrets.
func Verify(secret string, header http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := parseSecret(secret)
	if err != nil {
		return err
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	id, ts, sigs := header.Get(HeaderID), header.Get(HeaderTimestamp), header.Get(HeaderSignature)
	if id == "" || sigs == "" {
		return fmt.Errorf("%w: missing %s or %s", ErrInvalidSignature, HeaderID, HeaderSignature)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrInvalidTimestamp, ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s off, tolerance %s", ErrInvalidTimestamp, d.Round(time.Second), tolerance)
	}
	want := []byte(sign(key, id, ts, body))
	for s := range strings.FieldsSeq(sigs) {
		version, sig, ok := strings.Cut(s, ",")
		if ok && version == "v1" && hmac.Equal([]byte(sig), want) {
			return nil
		}
	}
	return ErrInvalidSignature
}
