package revset

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

type key struct {
	kind       byte
	tenant, id string
}

var kinds = []byte{'t', 'u', 's'}

// randomKeys returns n distinct keys spread over the three kinds and a few
// tenants, including tenant-wide keys with an empty id.
func randomKeys(t *testing.T, rng *rand.Rand, n int) []key {
	t.Helper()
	seen := make(map[key]bool, n)
	keys := make([]key, 0, n)
	for len(keys) < n {
		k := key{kinds[rng.IntN(len(kinds))], fmt.Sprintf("tenant-%d", rng.IntN(8)), ""}
		if k.kind != 't' {
			k.id = fmt.Sprintf("id-%d", rng.IntN(4*n))
		}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys
}

// checkModel fails the test unless s holds exactly the entries of want,
// among the keys of universe.
func checkModel(t *testing.T, s *Set, want map[key]int64, universe []key) {
	t.Helper()
	if s.Len() != len(want) {
		t.Fatalf("Len() = %d, want %d", s.Len(), len(want))
	}
	for _, k := range universe {
		v, ok := s.Get(k.kind, k.tenant, k.id)
		wv, wok := want[k]
		if ok != wok || v != wv {
			t.Fatalf("Get(%q, %q, %q) = %d, %v; want %d, %v", k.kind, k.tenant, k.id, v, ok, wv, wok)
		}
	}
}

func TestMatchesMap(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		sizeHint int
		keys     int // size of the key universe
		ops      int
		pruneOne int // one Prune every pruneOne operations on average; 0 never
	}{
		{name: "few keys, many updates", sizeHint: 0, keys: 50, ops: 5000, pruneOne: 200},
		{name: "growth from empty", sizeHint: 0, keys: 20000, ops: 40000, pruneOne: 0},
		{name: "growth with prunes", sizeHint: 0, keys: 20000, ops: 40000, pruneOne: 5000},
		{name: "size hint", sizeHint: 10000, keys: 5000, ops: 20000, pruneOne: 2000},
		{name: "frequent prunes", sizeHint: 0, keys: 2000, ops: 20000, pruneOne: 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(1, uint64(len(tt.name))))
			universe := randomKeys(t, rng, tt.keys)
			s := New(tt.sizeHint)
			want := make(map[key]int64)
			var clock int64 // values trail a rising clock, as revocation times do
			for op := range tt.ops {
				clock += int64(rng.IntN(10))
				if tt.pruneOne > 0 && rng.IntN(tt.pruneOne) == 0 {
					before := clock - int64(rng.IntN(500))
					wantRemoved := 0
					for k, v := range want {
						if v < before {
							delete(want, k)
							wantRemoved++
						}
					}
					if got := s.Prune(before); got != wantRemoved {
						t.Fatalf("op %d: Prune(%d) = %d, want %d", op, before, got, wantRemoved)
					}
					checkModel(t, s, want, universe)
					continue
				}
				k := universe[rng.IntN(len(universe))]
				v := clock - int64(rng.IntN(1000))
				old, present := want[k]
				wantChanged := !present || old < v
				if wantChanged {
					want[k] = v
				}
				if got := s.Max(k.kind, k.tenant, k.id, v); got != wantChanged {
					t.Fatalf("op %d: Max(%q, %q, %q, %d) = %v, want %v (held %d, %v)",
						op, k.kind, k.tenant, k.id, v, got, wantChanged, old, present)
				}
				if s.Len() != len(want) {
					t.Fatalf("op %d: Len() = %d, want %d", op, s.Len(), len(want))
				}
				if op%1000 == 0 {
					checkModel(t, s, want, universe)
				}
			}
			checkModel(t, s, want, universe)
		})
	}
}

func TestKeyPartsAreNotConfused(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		a, b key
	}{
		{name: "boundary between tenant and id", a: key{'u', "a", "bc"}, b: key{'u', "ab", "c"}},
		{name: "tenant and id swapped", a: key{'u', "x", "y"}, b: key{'u', "y", "x"}},
		{name: "different kinds", a: key{'u', "acme", "alice"}, b: key{'s', "acme", "alice"}},
		{name: "empty id", a: key{'t', "acme", ""}, b: key{'t', "acme", "x"}},
		{name: "empty id and empty tenant", a: key{'t', "acme", ""}, b: key{'t', "", "acme"}},
		{name: "kind zero", a: key{0, "acme", ""}, b: key{'t', "acme", ""}},
		{name: "separator byte in tenant", a: key{'u', "a\x00", "b"}, b: key{'u', "a", "\x00b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := New(0)
			s.Max(tt.a.kind, tt.a.tenant, tt.a.id, 1)
			if v, ok := s.Get(tt.b.kind, tt.b.tenant, tt.b.id); ok {
				t.Fatalf("Get(b) = %d, true with only a stored", v)
			}
			if !s.Max(tt.b.kind, tt.b.tenant, tt.b.id, 2) {
				t.Fatalf("Max(b) = false: b taken for a")
			}
			want := map[key]int64{tt.a: 1, tt.b: 2}
			checkModel(t, s, want, []key{tt.a, tt.b})
		})
	}
}

// TestConcurrentReaders runs readers against a writer that inserts, raises
// values, grows the table and prunes it. Every value the writer stores for
// key i is congruent to i modulo valueMod, so a reader can tell a value that
// belongs to another key, or a key published before its value.
func TestConcurrentReaders(t *testing.T) {
	t.Parallel()
	const (
		n          = 30000 // keys the writer inserts; keys n..2n-1 never are
		valueMod   = 1 << 20
		pruneFloor = 1 << 40 // values of prunable keys stay below it
	)
	ids := make([]string, 2*n)
	for i := range ids {
		ids[i] = fmt.Sprintf("session-%d", i)
	}
	prunable := func(i int) bool { return i%4 == 0 }
	first := func(i int) int64 {
		if prunable(i) {
			return int64(i)
		}
		return pruneFloor + int64(i)
	}

	s := New(0)
	var inserted atomic.Int64 // keys 0..inserted-1 have been stored
	var stop atomic.Bool
	var checks atomic.Int64
	var wg sync.WaitGroup
	readers := max(2, runtime.GOMAXPROCS(0))
	started := make(chan struct{}, readers)
	for r := range readers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 2))
			started <- struct{}{}
			for c := 0; !stop.Load(); c++ {
				done := int(inserted.Load())
				i := rng.IntN(2 * n)
				if c%2 == 0 && done < n {
					// The key the writer is storing right now: a reader
					// that sees it early must see its value too.
					i = done
				}
				v, ok := s.Get('s', "acme", ids[i])
				switch {
				case i >= n && ok:
					t.Errorf("key %d never inserted, Get = %d, true", i, v)
				case i < done && !prunable(i) && !ok:
					t.Errorf("key %d inserted, not pruned, Get = false", i)
				case ok && (v < first(i) || v%valueMod != int64(i)):
					t.Errorf("key %d: Get = %d, want >= %d and congruent to %d", i, v, first(i), i)
				}
				if s.Len() < 0 {
					t.Errorf("Len() = %d", s.Len())
				}
				if t.Failed() {
					return
				}
				if c%64 == 0 {
					checks.Add(64)
				}
			}
		})
	}
	for range readers {
		<-started
	}

	rng := rand.New(rand.NewPCG(3, 4))
	for i := range n {
		s.Max('s', "acme", ids[i], first(i))
		inserted.Store(int64(i + 1))
		if i%3 == 0 {
			j := rng.IntN(i + 1)
			s.Max('s', "acme", ids[j], first(j)+int64(rng.IntN(8))*valueMod)
		}
		if i%5000 == 4999 {
			s.Prune(pruneFloor)
		}
		if t.Failed() {
			break
		}
	}
	s.Prune(pruneFloor)
	stop.Store(true)
	wg.Wait()

	if got, want := s.Len(), n-n/4; !t.Failed() && got != want {
		t.Errorf("after the last prune Len() = %d, want %d", got, want)
	}
	t.Logf("%d reads during %d inserts", checks.Load(), n)
}

// TestGetDoesNotAllocate is not parallel: AllocsPerRun counts the
// allocations of the whole process.
func TestGetDoesNotAllocate(t *testing.T) {
	s := New(0)
	for i := range 1000 {
		s.Max('s', "acme", fmt.Sprint(i), int64(i))
	}
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{name: "hit", id: "500", ok: true},
		{name: "miss", id: "absent", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ok bool
			allocs := testing.AllocsPerRun(1000, func() {
				_, ok = s.Get('s', "acme", tt.id)
			})
			if ok != tt.ok {
				t.Fatalf("Get(%q) ok = %v, want %v", tt.id, ok, tt.ok)
			}
			if allocs != 0 {
				t.Fatalf("Get allocates %v times per call, want 0", allocs)
			}
		})
	}
}

// TestMemoryPerEntry checks the growth policy against the memory target of
// at most 100 bytes per entry, at every size on the way up, and that
// pruning gives memory back.
func TestMemoryPerEntry(t *testing.T) {
	t.Parallel()
	const n = 50000
	s := New(0)
	for i := range n {
		s.Max('s', "acme", fmt.Sprint(i), int64(i))
		if per := s.SizeBytes() / s.Len(); s.Len() >= minSlots && per > 100 {
			t.Fatalf("%d entries take %d bytes each, want <= 100", s.Len(), per)
		}
	}
	full := s.SizeBytes()
	if removed := s.Prune(n - 100); removed != n-100 {
		t.Fatalf("Prune removed %d, want %d", removed, n-100)
	}
	if s.SizeBytes() >= full/100 {
		t.Errorf("after pruning to 100 entries SizeBytes() = %d, was %d", s.SizeBytes(), full)
	}
}

// TestSizeHint checks that a kind's table, sized by New when the kind's
// first entry comes, does not grow before it holds sizeHint entries, and
// that Prune does not shrink it below that.
func TestSizeHint(t *testing.T) {
	t.Parallel()
	const hint = 10000
	s := New(hint)
	if s.SizeBytes() != 0 {
		t.Fatalf("SizeBytes() = %d before any entry, want 0", s.SizeBytes())
	}
	s.Max('u', "acme", "0", 0)
	size := s.SizeBytes()
	if size < 2*hint*24 {
		t.Fatalf("SizeBytes() = %d after the first entry, want room for %d entries at half load", size, hint)
	}
	for i := 1; i < hint; i++ {
		s.Max('u', "acme", fmt.Sprint(i), int64(i))
	}
	if s.SizeBytes() != size {
		t.Fatalf("SizeBytes() = %d after %d inserts, want %d as after the first", s.SizeBytes(), hint, size)
	}
	s.Prune(hint)
	if s.Len() != 0 || s.SizeBytes() != size {
		t.Fatalf("after pruning all: Len() = %d, SizeBytes() = %d; want 0, %d", s.Len(), s.SizeBytes(), size)
	}
}

// TestKindsHaveTheirOwnTables: entries of one kind do not grow the table
// of another, so a lookup of a kind that holds few entries probes a small
// table however many the others hold.
func TestKindsHaveTheirOwnTables(t *testing.T) {
	t.Parallel()
	s := New(0)
	const n = 20000
	for i := range n {
		s.Max('u', "acme", fmt.Sprint(i), int64(i))
	}
	s.Max('s', "acme", "session", 1)
	s.Max('t', "acme", "", 2)
	slots := func(kind byte) int {
		if tab := s.tabs[kind].Load(); tab != nil {
			return len(tab.slots)
		}
		return 0
	}
	if got, want := slots('u'), slotsFor(n); got != want {
		t.Errorf("user table: %d slots, want %d", got, want)
	}
	for _, kind := range []byte{'s', 't'} {
		if got := slots(kind); got != minSlots {
			t.Errorf("%q table: %d slots beside %d users, want %d", kind, got, n, minSlots)
		}
	}
	if got := slots('d'); got != 0 {
		t.Errorf("table of a kind never stored: %d slots, want none", got)
	}
	if got, want := s.SizeBytes(), (slotsFor(n)+2*minSlots)*24; got != want {
		t.Errorf("SizeBytes() = %d, want %d", got, want)
	}
	for _, tt := range []struct {
		kind     byte
		id       string
		want     int64
		wantOK   bool
		describe string
	}{
		{'u', "19999", 19999, true, "a user"},
		{'s', "session", 1, true, "the session"},
		{'t', "", 2, true, "the tenant"},
		{'s', "19999", 0, false, "a user's id as a session"},
		{'d', "19999", 0, false, "a kind never stored"},
	} {
		if v, ok := s.Get(tt.kind, "acme", tt.id); v != tt.want || ok != tt.wantOK {
			t.Errorf("%s: Get(%q, acme, %q) = %d, %v; want %d, %v", tt.describe, tt.kind, tt.id, v, ok, tt.want, tt.wantOK)
		}
	}
	if removed := s.Prune(n - 10); removed != n-10+2 {
		t.Fatalf("Prune removed %d, want %d", removed, n-10+2)
	}
	if s.Len() != 10 || slots('u') != slotsFor(10) || slots('s') != minSlots {
		t.Errorf("after the prune: Len() = %d, user table %d slots, session table %d; want 10, %d, %d",
			s.Len(), slots('u'), slots('s'), slotsFor(10), minSlots)
	}
}

// TestGrow: a table grown for n more entries keeps the entries it had,
// does not grow while it takes them, and a smaller growth changes
// nothing; a kind with no table yet gets one of that size.
func TestGrow(t *testing.T) {
	t.Parallel()
	s := New(0)
	for i := range 100 {
		s.Max('u', "acme", fmt.Sprint(i), int64(i))
	}
	const n = 50000
	s.Grow('u', n-100)
	size := s.SizeBytes()
	if size < 2*n*24 {
		t.Fatalf("SizeBytes() = %d after Grow('u', %d) of 100 entries, want room for %d entries at half load", size, n-100, n)
	}
	for i := range 100 {
		if v, ok := s.Get('u', "acme", fmt.Sprint(i)); !ok || v != int64(i) {
			t.Fatalf("entry %d after Grow: %d, %v", i, v, ok)
		}
	}
	for i := 100; i < n; i++ {
		s.Max('u', "acme", fmt.Sprint(i), int64(i))
	}
	s.Grow('u', 10)
	if s.SizeBytes() != size || s.Len() != n {
		t.Fatalf("after %d entries and Grow('u', 10): SizeBytes() = %d, Len() = %d; want %d, %d", n, s.SizeBytes(), s.Len(), size, n)
	}
	s.Grow('s', n)
	if got := s.SizeBytes() - size; got < 2*n*24 {
		t.Fatalf("Grow('s', %d) of a kind with no table added %d bytes, want room for %d entries at half load", n, got, n)
	}
}

// TestProbeHashCollision plants an entry whose probe hash equals a key's but
// whose confirming hash differs, as a colliding key would (a real 64-bit
// collision cannot be found for a test), and checks that the two keys stay
// apart through inserts, growth and a prune.
func TestProbeHashCollision(t *testing.T) {
	t.Parallel()
	s := New(0)
	h1 := s.hash1('s', "acme", "victim")
	s.Grow('s', 1)
	tab := s.tabs['s'].Load()
	planted := &tab.slots[tab.free(h1)]
	planted.v, planted.k2 = 1000, ^s.hash2('s', "acme", "victim")
	atomic.StoreUint64(&planted.k1, h1)
	s.kinds['s'] = 1
	s.n.Store(1)

	plantedValue := func(t *testing.T) int64 {
		t.Helper()
		tab := s.tabs['s'].Load()
		for i := range tab.slots {
			if sl := &tab.slots[i]; atomic.LoadUint64(&sl.k1) == h1 && atomic.LoadUint64(&sl.k2) != s.hash2('s', "acme", "victim") {
				return atomic.LoadInt64(&sl.v)
			}
		}
		t.Fatal("planted entry lost")
		return 0
	}

	if v, ok := s.Get('s', "acme", "victim"); ok {
		t.Fatalf("Get(victim) = %d, true before it was stored", v)
	}
	if !s.Max('s', "acme", "victim", 7) {
		t.Fatal("Max(victim, 7) = false: the planted entry was taken for it")
	}
	for i := range 1000 { // several doublings
		s.Max('s', "acme", fmt.Sprint(i), 2000)
	}
	if v, ok := s.Get('s', "acme", "victim"); !ok || v != 7 {
		t.Fatalf("after growth Get(victim) = %d, %v; want 7, true", v, ok)
	}
	if v := plantedValue(t); v != 1000 {
		t.Fatalf("planted value = %d, want 1000", v)
	}
	if removed := s.Prune(10); removed != 1 {
		t.Fatalf("Prune(10) removed %d, want 1 (victim)", removed)
	}
	if v, ok := s.Get('s', "acme", "victim"); ok {
		t.Fatalf("after prune Get(victim) = %d, true", v)
	}
	if v := plantedValue(t); v != 1000 {
		t.Fatalf("after prune planted value = %d, want 1000", v)
	}
}
