package intervalstore

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowattr/flowattr/internal/owners"
)

const benchKeys = 1 << 20

// benchKey is the key of the address 10.x.y.z numbered i, in the form the
// ownership processor uses.
func benchKey(i int) Key128 {
	return AddrKey(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
}

var benchOwners = func() []owners.Owner {
	os := make([]owners.Owner, 1000)
	for i := range os {
		os[i] = owners.Owner{ID: fmt.Sprintf("workload-%d", i), Attributes: []owners.Attribute{{Name: "k8s.namespace.name", Value: "shop"}, {Name: "service.name", Value: fmt.Sprintf("svc-%d", i)}}}
	}
	return os
}()

// benchStore builds a store of n IPv4 address keys, each with rangesPerKey ranges of
// alternating owners (an IP reused by workloads over time), each range 60 s
// long with 10 s gaps.
func benchStore(b *testing.B, n, rangesPerKey int) *Store[Key128] {
	b.Helper()
	s, err := New[Key128](Config{
		MergeGap: time.Second, ClockSkew: 100 * time.Millisecond, Retention: 24 * time.Hour,
		MaxKeys: n, Now: fixedClock(base.Add(time.Hour)),
	})
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		k := benchKey(i)
		for r := range rangesPerKey {
			st := base.Add(time.Duration(r) * 70 * time.Second)
			if _, err := s.Apply(k, benchOwners[(i+r)%len(benchOwners)], st, st.Add(60*time.Second)); err != nil {
				b.Fatal(err)
			}
		}
	}
	return s
}

// benchRanges is the number of ranges per key of the lookup benchmarks'
// stores.
const benchRanges = 3

// lookupPlan is a shuffled sequence of (key, time) lookups: uniform over the
// n keys, and over the newest `newest` of the keys' benchRanges ranges (see
// benchStore). It holds n lookups (at least 1<<16; n is a power of two), so
// that a benchmark cycling through it reaches about every key: a shorter
// plan over a large store touches few enough slots to stay in a large L3
// cache, and its lookups would then not miss the CPU caches as a large
// store's do.
func lookupPlan(n, newest int) ([]Key128, []time.Time) {
	r := rand.New(rand.NewPCG(1, 1))
	size := max(n, 1<<16)
	keys, times := make([]Key128, size), make([]time.Time, size)
	for i := range keys {
		keys[i] = benchKey(r.IntN(n))
		times[i] = base.Add(time.Duration(benchRanges-1-r.IntN(newest))*70*time.Second + 30*time.Second)
	}
	return keys, times
}

// lookupTimes are the two time distributions of the lookup benchmarks, over
// keys with 3 ranges: "recent" asks about the newest range, as the processor
// does for nearly every flow (a flow starts seconds to minutes before it is
// attributed, and an address keeps its owner far longer); "any" asks about
// each of the three ranges alike, so that two thirds of the lookups read a
// key's older ranges as well.
var lookupTimes = []struct {
	name   string
	newest int
}{{"at=recent", 1}, {"at=any", 3}}

func BenchmarkLookup(b *testing.B) {
	s := benchStore(b, benchKeys, benchRanges)
	for _, lt := range lookupTimes {
		b.Run(lt.name, func(b *testing.B) {
			keys, times := lookupPlan(benchKeys, lt.newest)
			cpu := startMeasure(b)
			defer cpu.report(b)
			for i := 0; b.Loop(); i++ {
				j := i & (len(keys) - 1)
				if s.Lookup(keys[j], times[j]).Status != Attributed {
					b.Fatal("not attributed")
				}
			}
		})
	}
}

func BenchmarkLookupParallel(b *testing.B) {
	s := benchStore(b, benchKeys, benchRanges)
	keys, times := lookupPlan(benchKeys, 3)
	cpu := startMeasure(b)
	defer cpu.report(b)
	b.RunParallel(func(pb *testing.PB) {
		i := rand.IntN(len(keys))
		for pb.Next() {
			j := i & (len(keys) - 1)
			if s.Lookup(keys[j], times[j]).Status != Attributed {
				panic("not attributed")
			}
			i++
		}
	})
}

// BenchmarkApply measures claims: each Apply extends a key's trailing
// range by one second, round-robin over 1M keys in shuffled order.
func BenchmarkApply(b *testing.B) {
	s := benchStore(b, benchKeys, 1)
	r := rand.New(rand.NewPCG(2, 2))
	order := r.Perm(benchKeys)
	cpu := startMeasure(b)
	defer cpu.report(b)
	for i := 0; b.Loop(); i++ {
		k := order[i%benchKeys]
		end := base.Add(60*time.Second + time.Duration(i/benchKeys+1)*time.Second)
		if _, err := s.Apply(benchKey(k), benchOwners[k%len(benchOwners)], end.Add(-time.Second), end); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyFlappingKey measures a claim to a key whose owner changes
// at every claim and which holds the most ranges a key may: each claim
// splits its trailing range off and rewrites its older ones.
func BenchmarkApplyFlappingKey(b *testing.B) {
	s, err := New[int](Config{Retention: 24 * time.Hour, MaxKeys: 1, Now: fixedClock(base.Add(time.Hour))})
	if err != nil {
		b.Fatal(err)
	}
	owners := []owners.Owner{benchOwners[0], benchOwners[1]}
	// Claims 2 ms apart, each of the other owner, so that a run of any
	// length stays within the hour before the store's clock.
	claim := func(i int) {
		at := base.Add(time.Duration(i) * 2 * time.Millisecond)
		if _, err := s.Apply(0, owners[i%2], at, at); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i <= maxOlder; i++ {
		claim(i)
	}
	cpu := startMeasure(b)
	defer cpu.report(b)
	for i := maxOlder + 1; b.Loop(); i++ {
		claim(i)
	}
}

// BenchmarkMemory reports the live heap per stored range of a store with 1M
// IPv4 keys and 4 ranges each.
func BenchmarkMemory(b *testing.B) {
	const rangesPerKey = 4
	var perRange float64
	for b.Loop() {
		before := heapInUse()
		s := benchStore(b, benchKeys, rangesPerKey)
		after := heapInUse()
		if st := s.Stats(); st.Ranges != benchKeys*rangesPerKey {
			b.Fatalf("ranges = %d", st.Ranges)
		}
		perRange = float64(after-before) / float64(benchKeys*rangesPerKey)
		runtime.KeepAlive(s)
	}
	b.ReportMetric(perRange, "B/range")
}

// cpuMeter reports CPU nanoseconds per operation next to ns/op: on a shared
// machine wall time includes waiting for a CPU, CPU time does not.
type cpuMeter struct{ start int64 }

// startMeasure starts a benchmark's measured part, after its setup: it
// reports allocations, collects the setup's garbage, and resets the timer
// and the CPU meter.
func startMeasure(b *testing.B) cpuMeter {
	b.ReportAllocs()
	runtime.GC()
	b.ResetTimer()
	return cpuMeter{processCPU()}
}

func (m cpuMeter) report(b *testing.B) {
	if m.start != 0 && b.N > 0 {
		b.ReportMetric(float64(processCPU()-m.start)/float64(b.N), "cpu-ns/op")
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkLookupInCache is BenchmarkLookup at a recent time over 1024
// keys, which stay in the CPU caches: the CPU cost of a lookup without its
// cache misses.
func BenchmarkLookupInCache(b *testing.B) {
	const n = 1 << 10
	s := benchStore(b, n, benchRanges)
	keys, times := lookupPlan(n, 1)
	cpu := startMeasure(b)
	defer cpu.report(b)
	for i := 0; b.Loop(); i++ {
		j := i & (len(keys) - 1)
		if s.Lookup(keys[j], times[j]).Status != Attributed {
			b.Fatal("not attributed")
		}
	}
}

// BenchmarkLookupAgainstMap times single Lookups, LookupBatch (batches of
// 1024) and a Go map of the same 1M keys in turn, in chunks of 4096 lookups
// of keys of their own, in one loop, so that all three see the same phases
// of a machine whose memory latency drifts. A fourth way, load, reads one word of each
// key's home slot, every read independent of the others: what any lookup
// of these tables costs at least, the memory's share alone, on the
// machine at hand (load/map). Each chunk is timed in the CPU time of its
// thread, so that time spent waiting for a CPU on a shared machine does not
// count, and the ways take turns at going first, so that none of them
// always follows what ran before. The
// ratios Lookup/map and LookupBatch/map, medians over the rounds of one
// chunk each, so that the rounds another process disturbed do not decide
// them, are the figures to compare between runs; Lookup-ns, LookupBatch-ns
// and map-ns, means, move with the machine. ns/op is per round of one
// lookup each way.
func BenchmarkLookupAgainstMap(b *testing.B) {
	s := benchStore(b, benchKeys, benchRanges)
	m := make(map[Key128]uint64, benchKeys)
	for i := range benchKeys {
		m[benchKey(i)] = uint64(i)
	}
	for _, lt := range lookupTimes {
		keys, times := lookupPlan(benchKeys, lt.newest)
		b.Run(lt.name, func(b *testing.B) { lookupAgainstMap(b, s, m, keys, times) })
	}
}

// lookupAgainstMap is BenchmarkLookupAgainstMap's loop over one plan.
func lookupAgainstMap(b *testing.B, s *Store[Key128], m map[Key128]uint64, keys []Key128, times []time.Time) {
	qs := make([]Query[Key128], len(keys))
	for i := range keys {
		qs[i] = Query[Key128]{keys[i], times[i]}
	}
	const chunk, batchSize = 1 << 12, 1 << 10
	out := make([]Result, 0, batchSize)
	var sum uint64
	unattributed := 0
	homes := make([]*atomic.Uint32, len(keys))
	for i, k := range keys {
		h := s.hash(k)
		tab := s.tableFor(h)
		homes[i] = &tab.slots[tab.home(h)].ver
	}
	ways := [4]func(lo, hi int){
		func(lo, hi int) {
			for j := lo; j < hi; j++ {
				if s.Lookup(keys[j], times[j]).Status != Attributed {
					unattributed++
				}
			}
		},
		func(lo, hi int) {
			for j := lo; j < hi; j += batchSize {
				out = s.LookupBatch(qs[j:min(j+batchSize, hi)], out[:0])
				for _, res := range out {
					if res.Status != Attributed {
						unattributed++
					}
				}
			}
		},
		func(lo, hi int) {
			for j := lo; j < hi; j++ {
				sum += m[keys[j]]
			}
		},
		func(lo, hi int) {
			for j := lo; j < hi; j++ {
				sum += uint64(homes[j].Load())
			}
		},
	}
	var spent [4]int64 // thread CPU nanoseconds of ways[i]
	var singleRatios, batchRatios, loadRatios []float64
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	startMeasure(b)
	for done := 0; done < b.N; done += chunk {
		r := done / chunk
		n := min(chunk, b.N-done)
		var round [4]int64
		for w := range ways {
			w = (w + r) % len(ways)
			// Each way its own keys in a round, lest one find in the
			// caches what another brought in.
			off := (r*len(ways) + w) * chunk & (len(keys) - 1) // chunks never wrap: chunk divides len(keys)
			t0 := threadCPU()
			ways[w](off, off+n)
			round[w] = threadCPU() - t0
			spent[w] += round[w]
		}
		if round[2] > 0 {
			singleRatios = append(singleRatios, float64(round[0])/float64(round[2]))
			batchRatios = append(batchRatios, float64(round[1])/float64(round[2]))
			loadRatios = append(loadRatios, float64(round[3])/float64(round[2]))
		}
	}
	runtime.KeepAlive(sum)
	if unattributed > 0 {
		b.Fatalf("%d lookups not attributed", unattributed)
	}
	b.ReportMetric(float64(spent[0])/float64(b.N), "Lookup-ns")
	b.ReportMetric(float64(spent[1])/float64(b.N), "LookupBatch-ns")
	b.ReportMetric(float64(spent[2])/float64(b.N), "map-ns")
	b.ReportMetric(median(singleRatios), "Lookup/map")
	b.ReportMetric(median(batchRatios), "LookupBatch/map")
	b.ReportMetric(median(loadRatios), "load/map")
}

// median returns the median of xs (which it sorts), or 0 if there are none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	return xs[len(xs)/2]
}
