package revset

import (
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
)

// benchIDs returns n session ids shaped like the real ones (26-byte ULIDs),
// allocated one after the other so that walking them in order costs the
// benchmark little cache: a request's key is in cache, the table is not.
func benchIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%024d", prefix, i)
	}
	return ids
}

// BenchmarkGet measures Get on tables of 0, 100k and 1M entries, for keys
// that are present (hit) and absent (miss; the common case, as most
// sessions are not revoked), from one goroutine and from GOMAXPROCS. The
// plain hit and miss cases spread over every key, so at 1M entries nearly
// every Get waits for a cache miss on the table: they measure the memory.
// B/entry is the slot memory per entry; heapB/entry the live heap growth
// per entry measured with runtime.MemStats while filling the table.
func BenchmarkGet(b *testing.B) {
	const tenant = "tenant-01J9ZQ4X8Y"
	for _, entries := range []int{0, 100_000, 1_000_000} {
		present := benchIDs("01", entries)
		absent := benchIDs("02", max(entries, 100_000))

		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s := New(0)
		for i, id := range present {
			s.Max('s', tenant, id, int64(i)+1)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perEntry, heapPerEntry := 0.0, 0.0
		if entries > 0 {
			perEntry = float64(s.SizeBytes()) / float64(entries)
			heapPerEntry = float64(after.HeapAlloc-before.HeapAlloc) / float64(entries)
		}

		for _, tc := range []struct {
			name string
			ids  []string
		}{
			{name: "hit", ids: present},
			{name: "miss", ids: absent},
			// The hot cases ask for the same 1000 keys over and over, as
			// requests of the active sessions do: the slots they touch
			// stay in cache, so these measure the CPU cost of Get.
			{name: "hit-hot", ids: present[:min(len(present), 1000)]},
			{name: "miss-hot", ids: absent[:1000]},
		} {
			if len(tc.ids) == 0 {
				continue
			}
			report := func(b *testing.B) {
				b.ReportMetric(perEntry, "B/entry")
				b.ReportMetric(heapPerEntry, "heapB/entry")
			}
			b.Run(fmt.Sprintf("entries=%d/%s/serial", entries, tc.name), func(b *testing.B) {
				b.ReportAllocs()
				found, i := 0, 0
				for b.Loop() {
					if _, ok := s.Get('s', tenant, tc.ids[i]); ok {
						found++
					}
					if i++; i == len(tc.ids) {
						i = 0
					}
				}
				if want := strings.HasPrefix(tc.name, "hit"); (found > 0) != want {
					b.Fatalf("found %d keys, want hits %v", found, want)
				}
				report(b)
			})
			b.Run(fmt.Sprintf("entries=%d/%s/parallel", entries, tc.name), func(b *testing.B) {
				b.ReportAllocs()
				var next atomic.Int64
				b.RunParallel(func(pb *testing.PB) {
					// Each goroutine walks its own stretch of keys.
					i := int(next.Add(1)*7919) % len(tc.ids)
					for pb.Next() {
						s.Get('s', tenant, tc.ids[i])
						if i++; i == len(tc.ids) {
							i = 0
						}
					}
				})
				report(b)
			})
		}
		runtime.KeepAlive(s)
	}
}

// BenchmarkMax measures the writer: inserting new keys into a Set that
// starts empty, so the cost includes every doubling of the table, and
// raising the value of present keys.
func BenchmarkMax(b *testing.B) {
	const tenant = "tenant-01J9ZQ4X8Y"
	ids := benchIDs("01", 1_000_000)
	b.Run("insert", func(b *testing.B) {
		b.ReportAllocs()
		s := New(0)
		i := 0
		for b.Loop() {
			if i == len(ids) {
				b.StopTimer()
				s, i = New(0), 0
				b.StartTimer()
			}
			s.Max('s', tenant, ids[i], 1)
			i++
		}
	})
	b.Run("raise", func(b *testing.B) {
		b.ReportAllocs()
		s := New(len(ids))
		for _, id := range ids {
			s.Max('s', tenant, id, 0)
		}
		i, v := 0, int64(1)
		for b.Loop() {
			s.Max('s', tenant, ids[i], v)
			if i++; i == len(ids) {
				i, v = 0, v+1
			}
		}
	})
}

// BenchmarkPrune measures a prune of 1M entries that removes a tenth of
// them, which rebuilds the table.
func BenchmarkPrune(b *testing.B) {
	const tenant = "tenant-01J9ZQ4X8Y"
	ids := benchIDs("01", 1_000_000)
	for b.Loop() {
		b.StopTimer()
		s := New(0)
		for i, id := range ids {
			s.Max('s', tenant, id, int64(i))
		}
		b.StartTimer()
		s.Prune(int64(len(ids) / 10))
	}
}
