package db

import (
	"slices"
	"strings"
	"testing"
)

func TestWarnings(t *testing.T) {
	tests := []struct {
		name     string
		settings map[string]string
		want     []string // the setting each warning names, in order
	}{
		{"defaults", map[string]string{"autovacuum": "on", "fsync": "on", "synchronous_commit": "on"}, nil},
		{"remote_apply counts as on", map[string]string{"autovacuum": "on", "fsync": "on", "synchronous_commit": "remote_apply"}, nil},
		{"no autovacuum", map[string]string{"autovacuum": "off", "fsync": "on", "synchronous_commit": "on"}, []string{"autovacuum"}},
		{"nothing durable", map[string]string{"autovacuum": "on", "fsync": "off", "synchronous_commit": "off"}, []string{"fsync", "synchronous_commit"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, w := range warnings(tc.settings) {
				name, _, _ := strings.Cut(w, " ")
				got = append(got, name)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("warnings name %q, want %q", got, tc.want)
			}
		})
	}
}
