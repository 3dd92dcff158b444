package revset

import (
	"strings"
	"testing"
)

// TestStrhash checks that strhash reads the whole string and its seed:
// every input below differs from the others in one of them, some in a
// byte past the first 16 or the first 64, and the lengths (0, 1, 2, 12,
// 21, 100 and 101 bytes) take different paths through the AES hash.
func TestStrhash(t *testing.T) {
	long := strings.Repeat("x", 100)
	inputs := []struct {
		seed uint64
		s    string
	}{
		{1, ""},
		{2, ""},
		{1, "a"},
		{2, "a"},
		{1, "b"},
		{1, "ab"},
		{1, "ba"},
		{1, "user-0000007"},
		{1, "user-0000008"},
		{1, "3f9a1c2e-session-0001"},
		{1, "3f9a1c2e-session-0002"},
		{1, long},
		{1, long + "y"},
		{1, long[:99] + "y"},
		{1, "y" + long[1:]},
	}
	seen := map[uint64]int{}
	for i, in := range inputs {
		h := strhash(in.seed, in.s)
		if h != strhash(in.seed, strings.Clone(in.s)) {
			t.Errorf("strhash(%d, %q) differs between two copies of the string", in.seed, in.s)
		}
		if j, ok := seen[h]; ok {
			t.Errorf("strhash(%d, %q) = strhash(%d, %q)", in.seed, in.s, inputs[j].seed, inputs[j].s)
		}
		seen[h] = i
	}
}
