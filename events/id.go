package events

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// MaxIDLen is the longest identifier, in bytes, that evict accepts.
const MaxIDLen = 128

// ErrInvalidID is wrapped by every identifier validation error.
var ErrInvalidID = errors.New("invalid identifier")

// ValidID reports whether id may be used as a tenant, user, group, session or
// device identifier. An identifier is 1 to [MaxIDLen] bytes of ASCII letters,
// digits and the characters "_-:@+=~". Everything else is refused rather than
// encoded: dots, wildcards ("*", ">"), whitespace and control characters would
// change a NATS subject, and non-ASCII letters invite look-alike identifiers
// that an admin cannot tell apart.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !idByte[id[i]] {
			return false
		}
	}
	return true
}

// CheckID returns nil when id is valid, or an error wrapping [ErrInvalidID]
// that names the field and says what is wrong.
func CheckID(field, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%s: %w: empty", field, ErrInvalidID)
	case len(id) > MaxIDLen:
		return fmt.Errorf("%s: %w: %d bytes, at most %d", field, ErrInvalidID, len(id), MaxIDLen)
	}
	for i, r := range id {
		if r >= utf8.RuneSelf || !idByte[byte(r)] {
			// %U names a look-alike letter unambiguously (U+0430, not "а").
			return fmt.Errorf("%s: %w: character %U %q at byte offset %d; allowed are ASCII letters, digits and _-:@+=~",
				field, ErrInvalidID, r, r, i)
		}
	}
	return nil
}

var idByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "_-:@+=~" {
		t[c] = true
	}
	return t
}()
