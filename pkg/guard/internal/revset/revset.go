package revset

import (
	"math"
	"math/bits"
	"sync/atomic"
	"unsafe"
)

// minSlots is the smallest slot array; below it the table's fixed overhead
// dominates anyway.
const minSlots = 16

// Set maps (kind, tenant, id) to an int64, normally a unix time in
// nanoseconds.
//
// A Set has exactly one writer and any number of readers. [Set.Get] and
// [Set.Len] may be called from any goroutine at any time, concurrently with
// each other and with the writer. [Set.Max], [Set.Grow] and [Set.Prune] must
// only be called from one goroutine at a time (the writer); calling them
// concurrently corrupts the table. Readers never block and never see a key
// that was not stored; they may see an update by the writer slightly late.
//
// The zero value is not usable; call [New].
type Set struct {
	// tabs is a table per kind, nil until the kind's first entry. A
	// guard's check looks up a session, a user and a tenant: in one table
	// of every kind, a million revoked users made each of the three a
	// cache miss in one large array; in tables of their own, only the
	// kind that is large costs one (docs/benchmarks.md, item 47).
	tabs  [256]atomic.Pointer[table]
	floor int // slot count never to shrink below, from New's sizeHint

	// Seeds for the two key hashes, one per key part so that no
	// concatenation can be ambiguous. They are fixed after New.
	seedT1, seedI1, seedT2, seedI2 uint64
	// emptyI1 is the probe hash of the empty id (a tenant's own entry).
	emptyI1 uint64

	// The writer stores n on every insert: the padding keeps it off the
	// cache lines that every Get reads (tabs and the seeds).
	_ [64]byte
	n atomic.Int64 // entries; may lag the tables by the writer's current call
	// kinds counts the entries of each kind. Writer only.
	kinds [256]int
}

// table is an open-addressing hash table with linear probing. Once a slot's
// k1 is set it never changes in this table: deleting and resizing build a
// new table, so a reader holding an old one still probes a consistent array.
type table struct {
	slots []slot
	mask  uint64 // len(slots)-1; len(slots) is a power of two
}

// slot holds one entry. k1 is the probe hash and is never 0 for an entry, so
// 0 marks an empty slot; k2 is an independent hash that confirms a k1 match.
// The writer stores v, then k2, then k1, so a reader that sees k1 also sees
// the k2 and v stored before it.
//
// Readers load every field atomically. The writer, the only one to store,
// reads them plainly, and stores k2 and v of a slot no reader looks at yet
// plainly too: an empty slot's (a reader reads them only once it sees k1)
// and every slot of a table that is not published yet (copyInto). An
// atomic store is a locked instruction on amd64 that waits for its cache
// line: with three of them an entry, copies into the new, uncached table
// of a growth took 0.34 s of the 1.29 s that ten guards spent applying a
// bulk logout of 100,000 users, and 0.22 s with plain stores
// (docs/benchmarks.md, item 45).
type slot struct {
	k1 uint64
	k2 uint64
	v  int64
}

// New returns an empty Set with room for sizeHint entries of each kind
// before its table has to grow. A sizeHint of 0 or less gives small tables
// that grow as needed.
func New(sizeHint int) *Set {
	s := &Set{
		seedT1: newSeed(),
		seedI1: newSeed(),
		seedT2: newSeed(),
		seedI2: newSeed(),
	}
	s.floor = slotsFor(sizeHint)
	s.emptyI1 = strhash(s.seedI1, "")
	return s
}

// Tenant is a tenant's share of the probe hash, for lookups of several
// keys of one tenant: a guard's check looks up the session, the user and
// the tenant, and hashing the tenant once instead of three times makes
// the check about a third cheaper.
type Tenant struct {
	name string
	h1   uint64
}

// Tenant returns tenant's share of the probe hash. Safe for concurrent use.
func (s *Set) Tenant(tenant string) Tenant {
	return Tenant{name: tenant, h1: strhash(s.seedT1, tenant)}
}

// Get returns the value for the key and whether it is present. Safe for
// concurrent use with one writer and other readers. Zero allocations.
func (s *Set) Get(kind byte, tenant, id string) (int64, bool) {
	return s.GetIn(kind, s.Tenant(tenant), id)
}

// GetIn is Get with the tenant's hash computed by Tenant.
func (s *Set) GetIn(kind byte, tn Tenant, id string) (int64, bool) {
	t := s.tabs[kind].Load()
	if t == nil {
		return 0, false // nothing of this kind yet: no hashing either
	}
	tenant := tn.name
	i1 := s.emptyI1
	if id != "" {
		i1 = strhash(s.seedI1, id)
	}
	h1 := probe(tn.h1, i1, kind)
	var h2 uint64
	have2 := false
	// The load factor is at most 1/2, so the probe meets an empty slot.
	for i := h1 & t.mask; ; i = (i + 1) & t.mask {
		sl := &t.slots[i]
		k := atomic.LoadUint64(&sl.k1)
		if k == h1 {
			// The second hash is paid for only on a k1 match, which
			// is rare except for keys that are present.
			if !have2 {
				h2, have2 = s.hash2(kind, tenant, id), true
			}
			if atomic.LoadUint64(&sl.k2) == h2 {
				return atomic.LoadInt64(&sl.v), true
			}
		} else if k == 0 {
			return 0, false
		}
	}
}

// Max stores v for the key if the key is absent or holds a smaller value.
// Writer only. Reports whether the stored value changed.
func (s *Set) Max(kind byte, tenant, id string, v int64) bool {
	t := s.tabs[kind].Load()
	if t == nil {
		t = newTable(s.floor)
		s.tabs[kind].Store(t)
	}
	h1 := s.hash1(kind, tenant, id)
	h2 := s.hash2(kind, tenant, id)
	i := h1 & t.mask
	for {
		sl := &t.slots[i]
		k := sl.k1
		if k == 0 {
			break
		}
		if k == h1 && sl.k2 == h2 {
			if sl.v >= v {
				return false
			}
			atomic.StoreInt64(&sl.v, v)
			return true
		}
		i = (i + 1) & t.mask
	}
	// Absent. Grow first if this entry would take the load past 1/2, so
	// that every probe, the readers' included, ends at an empty slot.
	if s.kinds[kind]+1 > len(t.slots)/2 {
		t = t.copyInto(newTable(len(t.slots)*2), math.MinInt64)
		s.tabs[kind].Store(t)
		i = t.free(h1)
	}
	sl := &t.slots[i]
	sl.v, sl.k2 = v, h2
	atomic.StoreUint64(&sl.k1, h1) // publishes the entry
	s.kinds[kind]++
	s.n.Add(1)
	return true
}

// Grow grows kind's table, if it must, so that it takes n more entries
// without growing again. Writer only. A guard at a cold start knows how
// many entries of each kind it is about to load: growing once, instead of
// doubling twenty times on the way to 1,000,000 entries, spares the copies
// and the garbage of every smaller table. Unlike New's size hint, it does
// not keep Prune from shrinking the table.
func (s *Set) Grow(kind byte, n int) {
	want := slotsFor(s.kinds[kind] + n)
	t := s.tabs[kind].Load()
	switch {
	case t == nil:
		s.tabs[kind].Store(newTable(max(s.floor, want)))
	case want > len(t.slots):
		s.tabs[kind].Store(t.copyInto(newTable(want), math.MinInt64))
	}
}

// Len is the number of entries. Safe for concurrent use.
func (s *Set) Len() int {
	return int(s.n.Load())
}

// Prune removes every entry whose value is < before (entries older than the
// longest session lifetime are useless) and returns how many it removed.
// Writer only. Readers keep working during a prune: they use the old table
// until the pruned one replaces it, so they may still find a pruned entry
// for a moment, never miss a kept one.
func (s *Set) Prune(before int64) int {
	removed := 0
	for kind := range s.tabs {
		t := s.tabs[kind].Load()
		if t == nil {
			continue
		}
		kept := 0
		for i := range t.slots {
			sl := &t.slots[i]
			if sl.k1 != 0 && sl.v >= before {
				kept++
			}
		}
		if kept == s.kinds[kind] {
			continue // nothing to do; spare the copy
		}
		// Deleting in place would have to move entries under the
		// readers' feet (or leave tombstones), so build a fresh
		// table, sized for what is left, and swap it in.
		nt := newTable(max(s.floor, slotsFor(kept)))
		s.tabs[kind].Store(t.copyInto(nt, before))
		removed += s.kinds[kind] - kept
		s.kinds[kind] = kept
	}
	s.n.Add(int64(-removed))
	return removed
}

// SizeBytes is the memory held by the tables' slots.
func (s *Set) SizeBytes() int {
	n := 0
	for kind := range s.tabs {
		if t := s.tabs[kind].Load(); t != nil {
			n += len(t.slots)
		}
	}
	return n * int(unsafe.Sizeof(slot{}))
}

// slotsFor returns the slot count that holds n entries at a load of at most
// 1/2: the smallest power of two >= 2n, and at least minSlots.
func slotsFor(n int) int {
	if n <= minSlots/2 {
		return minSlots
	}
	return 1 << bits.Len(uint(2*n-1))
}

func newTable(n int) *table {
	return &table{slots: make([]slot, n), mask: uint64(n - 1)}
}

// free returns the index of the empty slot where the probe for h1 ends. The
// writer calls it on a table that does not hold h1's key.
func (t *table) free(h1 uint64) uint64 {
	i := h1 & t.mask
	for t.slots[i].k1 != 0 {
		i = (i + 1) & t.mask
	}
	return i
}

// copyInto inserts t's entries whose value is >= before into the empty table
// nt, which no reader can see yet, and returns nt. k1 is the stored probe
// hash, so nothing is rehashed.
func (t *table) copyInto(nt *table, before int64) *table {
	for i := range t.slots {
		sl := &t.slots[i]
		if sl.k1 == 0 || sl.v < before {
			continue
		}
		nt.slots[nt.free(sl.k1)] = *sl
	}
	return nt
}

// Multipliers from wyhash; any odd constants with well-spread bits work.
const (
	mixK = 0xa0761d6478bd642f
	mixB = 0xe7037ed1a0b428db
)

// hash1 is the probe hash of a key. It is never 0, which marks an empty slot.
func (s *Set) hash1(kind byte, tenant, id string) uint64 {
	return probe(strhash(s.seedT1, tenant), strhash(s.seedI1, id), kind)
}

// probe folds the seedT1 hash of a tenant and the seedI1 hash of an id into
// the probe hash, never 0.
func probe(t, id uint64, kind byte) uint64 {
	h := mix(t, id, kind)
	if h == 0 {
		h = 1
	}
	return h
}

// hash2 is the confirming hash of a key, independent of hash1 because every
// seed differs. A false match needs hash1 and hash2 to collide together.
func (s *Set) hash2(kind byte, tenant, id string) uint64 {
	return mix(strhash(s.seedT2, tenant), strhash(s.seedI2, id), kind)
}

// mix folds the hashes of the tenant and the id, and the kind, into one
// 64-bit hash. Hashing the parts separately keeps ("a", "bc") and ("ab", "c")
// apart with no separator, and it is the fastest way measured that does not
// allocate: two string hashes take half the time of a maphash.Hash on
// the stack fed the three parts, and a third of maphash.Comparable on a
// struct key.
func mix(t, id uint64, kind byte) uint64 {
	hi, lo := bits.Mul64(t^((uint64(kind)+1)*mixK), id^mixB)
	return hi ^ lo
}
