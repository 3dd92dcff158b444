package admin

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzRequestDecoders feeds arbitrary bodies to the decoder of every
// request type: it never panics, refuses with an *apiError (a 4xx) or
// accepts, and what it accepts passes the strict JSON check.
func FuzzRequestDecoders(f *testing.F) {
	for _, seed := range []string{
		`{"users":["a","b"],"reason":"x"}`, `{"all":true}`, `{"users":["a"],"users":[]}`,
		`{"session_id":"s1","user_id":"u","client":"web","push":{"provider":"apns","token":"t"}}`,
		`{"device_id":"d1","label":"phone"}`, `{"logout":true,"reason":"lost"}`, `{"reason":"` + "\\u0000" + `"}`,
		`[`, `{"a":` + string(bytes.Repeat([]byte("["), 50)), "\xff\xfe", `null`, ``,
	} {
		f.Add([]byte(seed))
	}
	s := &Server{maxBody: 1 << 16}
	targets := []func() any{
		func() any { return &bulkLogoutBody{} },
		func() any { return &setMembersBody{} },
		func() any { return &sessionRequest{} },
		func() any { return &trustRequest{} },
		func() any { return &revokeTrustBody{} },
		func() any { return &reasonBody{} },
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, target := range targets {
			r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			err := s.decode(httptest.NewRecorder(), r, target())
			var ae *apiError
			var mbe *http.MaxBytesError
			switch {
			case err == nil:
				if checkStrictJSON(body) != nil {
					t.Fatalf("accepted %q, which the strict check refuses", body)
				}
			case errors.As(err, &ae):
				if ae.status < 400 || ae.status > 499 {
					t.Fatalf("refusal of %q with status %d", body, ae.status)
				}
			case errors.As(err, &mbe):
			default:
				t.Fatalf("decode(%q): unexpected error %v", body, err)
			}
		}
	})
}
