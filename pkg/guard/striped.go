package guard

import (
	"sync/atomic"
	"unsafe"
)

// stripedCounter is a counter that Check may bump on every request, from
// every core, without the cores contending for one cache line: one shared
// atomic counter made the parallel check of a stale guard slower on two
// cores than on one (BenchmarkCheck/…/stale/parallel).
type stripedCounter struct {
	stripes [16]struct {
		n atomic.Uint64
		_ [56]byte // one stripe per 64-byte cache line
	}
}

// inc adds one to the stripe of the calling goroutine. Goroutines run on
// stacks of their own, at least 8 KiB apart, so the address of a local
// variable tells them apart without anything shared; which stripe a
// goroutine uses does not matter for the sum, only that concurrent ones
// mostly use different stripes.
func (c *stripedCounter) inc() {
	var local byte
	// Stacks lie at addresses that differ in bits well above 13, so the
	// address is hashed (Fibonacci hashing: the top 4 bits of a product)
	// rather than cut.
	h := uint64(uintptr(unsafe.Pointer(&local))>>13) * 0x9e3779b97f4a7c15
	c.stripes[h>>60].n.Add(1)
}

// load is the sum of the stripes.
func (c *stripedCounter) load() uint64 {
	var sum uint64
	for i := range c.stripes {
		sum += c.stripes[i].n.Load()
	}
	return sum
}
