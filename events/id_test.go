package events_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/evict-dev/evict/events"
)

func TestValidID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		id   string
		want bool
	}{
		{"letters", "acme", true},
		{"one byte", "a", true},
		{"digits only", "0042", true},
		{"every allowed punctuation", "a_b-c:d@e+f=g~h", true},
		{"punctuation only", "_-:@+=~", true},
		{"uuid", "0f8fad5b-d9cb-469f-a165-70867728950e", true},
		{"oauth subject", "google-oauth2:109876543210", true},
		{"email-like without dot", "jane@acme", true},
		{"base64url", "c2Vzc2lvbi0x-_", true},
		{"base64 padding", "c2Vzc2lvbg==", true},
		{"128 bytes", strings.Repeat("a", events.MaxIDLen), true},

		{"empty", "", false},
		{"129 bytes", strings.Repeat("a", events.MaxIDLen+1), false},
		{"129 bytes of which the first 128 are valid", strings.Repeat("a", events.MaxIDLen) + ".", false},
		{"dot", "acme.corp", false},
		{"lone dot", ".", false},
		{"leading dot", ".acme", false},
		{"trailing dot", "acme.", false},
		{"token injection", "acme.user.mallory", false},
		{"star", "*", false},
		{"gt", ">", false},
		{"star inside", "ac*me", false},
		{"gt at the end", "acme>", false},
		{"space", "acme corp", false},
		{"tab", "acme\tcorp", false},
		{"newline", "acme\ncorp", false},
		{"trailing newline", "acme\n", false},
		{"carriage return", "acme\r", false},
		{"NUL", "acme\x00", false},
		{"DEL", "acme\x7f", false},
		{"escape", "\x1b[31macme", false},
		{"Cyrillic a", "\u0430cme", false},
		{"Cyrillic only look-alike", "\u0430\u0441\u0435", false},
		{"Greek omicron", "r\u03bfot", false},
		{"full-width letter", "\uff41cme", false},
		{"full-width digit", "user\uff11", false},
		{"full-width dot", "acme\uff0ecorp", false},
		{"no-break space", "acme\u00a0corp", false},
		{"zero-width space", "ac\u200bme", false},
		{"combining accent", "acme\u0301", false},
		{"invalid UTF-8", "acme\xff", false},
		{"percent-encoded dot", "acme%2Ecorp", false},
		{"percent", "100%", false},
		{"slash", "acme/corp", false},
		{"backslash", "acme\\corp", false},
		{"dollar", "$JS", false},
		{"pipe", "auth0|123", false},
		{"hash", "acme#1", false},
		{"quote", `acme"`, false},
		{"comma", "a,b", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := events.ValidID(tc.id); got != tc.want {
				t.Errorf("ValidID(%q) = %v, want %v", tc.id, got, tc.want)
			}
			err := events.CheckID("user", tc.id)
			switch {
			case tc.want && err != nil:
				t.Errorf("CheckID(%q) = %v, want nil", tc.id, err)
			case !tc.want && err == nil:
				t.Errorf("CheckID(%q) = nil, want an error", tc.id)
			case !tc.want && !errors.Is(err, events.ErrInvalidID):
				t.Errorf("CheckID(%q) = %v, want it to wrap ErrInvalidID", tc.id, err)
			case !tc.want && !strings.HasPrefix(err.Error(), "user: "):
				t.Errorf("CheckID(%q) = %q, want it to name the field", tc.id, err)
			}
		})
	}
}

// TestValidIDEveryByte checks the whole byte range against the documented
// alphabet, so a byte cannot slip in or out of it unnoticed.
func TestValidIDEveryByte(t *testing.T) {
	t.Parallel()
	const allowed = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-:@+=~"
	for b := 0; b < 256; b++ {
		id := "a" + string([]byte{byte(b)})
		want := strings.IndexByte(allowed, byte(b)) >= 0
		if got := events.ValidID(id); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", id, got, want)
		}
		if got := events.CheckID("tenant", id) == nil; got != want {
			t.Errorf("CheckID(%q) accepted = %v, want %v", id, got, want)
		}
	}
}
