package bench

import (
	"testing"

	"github.com/evict-dev/evict/internal/bench/report"
)

func TestParseChecks(t *testing.T) {
	t.Parallel()
	out := []byte(`goos: linux
goarch: amd64
pkg: github.com/evict-dev/evict/pkg/guard
cpu: AMD EPYC
BenchmarkCheck/entries=0/miss           	15376574	        71.75 ns/op	       0 B/op	       0 allocs/op
BenchmarkCheck/entries=0/miss-2         	18857930	        75.48 ns/op	       0 B/op	       0 allocs/op
BenchmarkCheck/entries=1000000/hit/parallel-2         	24500706	        53.43 ns/op	       8 B/op	       1 allocs/op
BenchmarkCheck/entries=0/miss           	15376574	        90.10 ns/op	       0 B/op	       0 allocs/op
BenchmarkCheck/entries=0/miss-2         	18857930	        75.01 ns/op	       0 B/op	       0 allocs/op
BenchmarkCheck/entries=1000000/hit/parallel-2         	24500706	        30.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkCheck/entries=0/miss           	15376574	        70.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkCheck/entries=0/miss-2         	18857930	        99.99 ns/op	       0 B/op	       0 allocs/op
BenchmarkCheckOther/entries=1/miss 	1	1.0 ns/op	0 B/op	0 allocs/op
PASS
ok  	github.com/evict-dev/evict/pkg/guard	93.120s
`)
	got, err := parseChecks(out)
	if err != nil {
		t.Fatal(err)
	}
	// -count=3: each case is its median, with the most allocations of
	// any run; a case run twice takes the slower.
	want := []report.Check{
		{Entries: 0, Case: "miss", CPU: 1, NsPerOp: 71.75},
		{Entries: 0, Case: "miss", CPU: 2, NsPerOp: 75.48},
		{Entries: 1_000_000, Case: "hit", Parallel: true, CPU: 2, NsPerOp: 53.43, BytesPerOp: 8, AllocsPerOp: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("parsed %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if _, err := parseChecks([]byte("FAIL\n")); err == nil {
		t.Error("output without results parsed without an error")
	}
}
