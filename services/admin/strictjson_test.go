package admin

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestCheckStrictJSON(t *testing.T) {
	deep := strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1)
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"object", `{"users":["a","b"],"reason":"x"}`, true},
		{"nested objects", `{"a":{"b":{"c":1}},"d":[{"e":2},{"e":3}]}`, true},
		{"same key in sibling objects", `[{"a":1},{"a":2}]`, true},
		{"same key at two levels", `{"a":{"a":1}}`, true},
		{"deepest allowed", strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth), true},
		{"duplicate key", `{"users":["a"],"users":[]}`, false},
		{"duplicate key after a nested value", `{"a":{"x":1},"b":2,"a":3}`, false},
		{"duplicate key nested", `{"a":{"x":1,"x":2}}`, false},
		{"too deep", deep, false},
		{"trailing value", `{"all":true} {"all":true}`, false},
		{"trailing garbage", `{"all":true} x`, false},
		{"unterminated", `{"users":[`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkStrictJSON([]byte(tt.in)); (err == nil) != tt.ok {
				t.Errorf("checkStrictJSON(%.40q) = %v, want ok=%v", tt.in, err, tt.ok)
			}
		})
	}
}

// FuzzCheckStrictJSON: never panics, and accepts only valid JSON.
func FuzzCheckStrictJSON(f *testing.F) {
	for _, s := range []string{`{"users":["a"]}`, `{"a":1,"a":2}`, `[[[[]]]]`, `{"a":{"b":[1,{"c":null}]}}`, `{} {}`, `"x"`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// An empty or blank body is decode's to refuse, not this check's.
		if checkStrictJSON(b) == nil && len(bytes.TrimSpace(b)) > 0 && !json.Valid(b) {
			t.Fatalf("accepted invalid JSON %q", b)
		}
	})
}
