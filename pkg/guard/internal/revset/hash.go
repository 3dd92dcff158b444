package revset

import (
	"math/rand/v2"
	"unsafe"
)

// memhash is the runtime's hash of memory, the one behind maps and
// hash/maphash: AES-based where the CPU has it, seeded per process, so
// keys cannot be chosen to collide. The runtime keeps its signature for
// packages that link to it (go.dev/issue/67401).
//
//go:linkname memhash runtime.memhash
//go:noescape
func memhash(p unsafe.Pointer, h, s uintptr) uintptr

// strhash is maphash.String without its layers of calls: every check
// hashes three to five strings, and in a CPU profile of BenchmarkCheck
// (hit, 1,000,000 entries) maphash.String took 19.3 s of the 38.0 s spent
// in Check, twice what the hashing itself took (aeshashbody, 8.4 s).
// Three strings of a check hash in 8.7 ns this way against 14.1 ns
// through maphash.String (docs/benchmarks.md, item 46).
func strhash(seed uint64, s string) uint64 {
	p := unsafe.Pointer(unsafe.StringData(s))
	if unsafe.Sizeof(uintptr(0)) == 8 {
		return uint64(memhash(p, uintptr(seed), uintptr(len(s))))
	}
	// 32-bit: two hashes of 32 bits, as maphash does.
	lo := memhash(p, uintptr(uint32(seed)), uintptr(len(s)))
	hi := memhash(p, uintptr(seed>>32), uintptr(len(s)))
	return uint64(hi)<<32 | uint64(lo)
}

// newSeed is a seed for strhash. rand's generator is seeded by the runtime
// from the system's randomness, as maphash's seeds are.
func newSeed() uint64 {
	return rand.Uint64()
}
