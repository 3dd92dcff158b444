// Package pushtest gives tests local stand-ins for the push services:
// TLS HTTP/2 servers that check each request the way FCM (with Google's
// OAuth token endpoint) and a Standard Webhooks receiver do, answer what
// they would, scripted per device token, and record what they accepted.
//
// The provider packages test their clients against them, and evictd's
// tests run the notifier end to end against the same servers, so both
// check the same things.
package pushtest

// Answer is what a fake answers to one request; the zero Answer is
// success (FCM 200 with a message name, gateway 204).
type Answer struct {
	Status     int
	Body       string
	RetryAfter string // Retry-After header, when set
}

// script holds the answers a fake gives, per device token: each request
// takes the next answer of its token's script, or of the "" script for
// tokens without one; the last answer of a script repeats. Callers lock.
type script map[string][]Answer

func (s script) next(token string) Answer {
	key := token
	if _, ok := s[key]; !ok {
		key = ""
	}
	q := s[key]
	if len(q) == 0 {
		return Answer{}
	}
	if len(q) > 1 {
		s[key] = q[1:]
	}
	return q[0]
}
