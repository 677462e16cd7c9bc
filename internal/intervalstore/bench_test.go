package intervalstore

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
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

// benchMap is the plain Go map of benchStore's first n keys that the
// lookup benchmarks read their figures against.
func benchMap(n int) map[Key128]uint64 {
	m := make(map[Key128]uint64, n)
	for i := range n {
		m[benchKey(i)] = uint64(i)
	}
	return m
}

// lookupPlan is a shuffled sequence of (key, time) lookups: uniform over the
// keys, so most of them miss the CPU caches, and over the newest `newest` of
// the keys' rangesPerKey ranges (see benchStore).
func lookupPlan(n, rangesPerKey, newest int) ([]Key128, []time.Time) {
	r := rand.New(rand.NewPCG(1, 1))
	keys, times := make([]Key128, 1<<16), make([]time.Time, 1<<16)
	for i := range keys {
		keys[i] = benchKey(r.IntN(n))
		times[i] = base.Add(time.Duration(rangesPerKey-1-r.IntN(newest))*70*time.Second + 30*time.Second)
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
	s := benchStore(b, benchKeys, 3)
	for _, lt := range lookupTimes {
		b.Run(lt.name, func(b *testing.B) {
			keys, times := lookupPlan(benchKeys, 3, lt.newest)
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
	s := benchStore(b, benchKeys, 3)
	keys, times := lookupPlan(benchKeys, 3, 3)
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

// BenchmarkApply measures heartbeats: each Apply extends a key's trailing
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

// BenchmarkLookupMapBaseline is a plain Go map lookup over the same keys and
// plan as BenchmarkLookup: the floor set by cache misses on this machine,
// to read BenchmarkLookup against (only ratios within one run mean much).
func BenchmarkLookupMapBaseline(b *testing.B) {
	m := benchMap(benchKeys)
	keys, _ := lookupPlan(benchKeys, 1, 1)
	var sum uint64
	cpu := startMeasure(b)
	defer cpu.report(b)
	for i := 0; b.Loop(); i++ {
		sum += m[keys[i&(len(keys)-1)]]
	}
	runtime.KeepAlive(sum)
}

// BenchmarkPointerChase measures this machine's latency of one dependent
// load, walking a random cycle through a region of the given size one cache
// line at a time: the floor under any lookup that misses the CPU caches, to
// read the store's figures against.
func BenchmarkPointerChase(b *testing.B) {
	type line struct {
		next int
		_    [56]byte
	}
	for _, mib := range []int{1, 8, 32, 128} {
		b.Run(fmt.Sprintf("MiB=%d", mib), func(b *testing.B) {
			lines := make([]line, mib<<20/64)
			order := rand.New(rand.NewPCG(3, 3)).Perm(len(lines))
			for i, l := range order {
				lines[l].next = order[(i+1)%len(order)]
			}
			p := order[0]
			b.ResetTimer()
			for b.Loop() {
				p = lines[p].next
			}
			runtime.KeepAlive(p)
		})
	}
}

// BenchmarkLookupSteps splits a single lookup at a recent time, in a store
// of 1M keys, into cumulative steps, with a Go map of the same keys in the
// same process: a load of each key's home slot alone, finding the key's
// slot, answering from it, and the whole Lookup (hashing the key and
// converting the time as well). Consecutive lookups are independent, so the
// CPU overlaps their cache misses, as many as fit in its window of
// instructions in flight: the more instructions a lookup takes, the fewer
// overlap, and the more each costs beyond the floor of one trip to memory
// (see docs/performance.md). Each step has its own loop, so that none pays
// for a call the others do not make.
func BenchmarkLookupSteps(b *testing.B) {
	s := benchStore(b, benchKeys, 3)
	keys, times := lookupPlan(benchKeys, 3, 1)
	hs, ts := make([]uint64, len(keys)), make([]int64, len(keys))
	for i, k := range keys {
		hs[i], ts[i] = s.hash(k), nanos(times[i])
	}
	m := benchMap(benchKeys)
	const mask = 1<<16 - 1
	var sum uint64
	b.Run("home-slot-load", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			tab := s.tableFor(hs[i&mask])
			sum += uint64(tab.slots[tab.home(hs[i&mask])].ver.Load())
		}
	})
	b.Run("find-slot", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			j := i & mask
			sum += uint64(s.tableFor(hs[j]).lookup(keys[j], hs[j]).ver.Load())
		}
	})
	b.Run("find-and-answer", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			j := i & mask
			tab := s.tableFor(hs[j])
			res, _ := s.answer(tab, tab.lookup(keys[j], hs[j]), hs[j], ts[j])
			sum += uint64(res.Status)
		}
	})
	b.Run("Lookup", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			j := i & mask
			sum += uint64(s.Lookup(keys[j], times[j]).Status)
		}
	})
	b.Run("map", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			sum += m[keys[i&mask]]
		}
	})
	runtime.KeepAlive(sum)
}

// BenchmarkMapWithWork is BenchmarkLookupMapBaseline with a loop of cheap
// instructions after each lookup that depend neither on it nor on the
// next: they cost a few nanoseconds alone, yet each lookup's cache miss
// keeps them from retiring, so they fill the CPU's window of instructions
// in flight and fewer lookups overlap. It shows on this machine what any
// instruction between two lookups' misses costs (see docs/performance.md).
func BenchmarkMapWithWork(b *testing.B) {
	m := benchMap(benchKeys)
	keys, _ := lookupPlan(benchKeys, 1, 1)
	for _, n := range []int{0, 20, 40} {
		b.Run(fmt.Sprintf("iterations=%d", n), func(b *testing.B) {
			var sum, acc uint64
			for i := 0; b.Loop(); i++ {
				sum += m[keys[i&(len(keys)-1)]]
				acc = independentWork(acc, n)
			}
			runtime.KeepAlive(sum + acc)
		})
	}
}

//go:noinline
func independentWork(x uint64, n int) uint64 {
	for i := range n {
		x += uint64(i) ^ 0x9e37
	}
	return x
}

// BenchmarkLookupInCache is BenchmarkLookup at a recent time and the map
// baseline over 1024 keys, which stay in the CPU caches: the CPU time of a
// lookup without its cache misses.
func BenchmarkLookupInCache(b *testing.B) {
	const n = 1 << 10
	s := benchStore(b, n, 3)
	keys, times := lookupPlan(n, 3, 1)
	m := benchMap(n)
	var sum uint64
	b.Run("Lookup", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			j := i & (len(keys) - 1)
			sum += uint64(s.Lookup(keys[j], times[j]).Status)
		}
	})
	b.Run("map", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			sum += m[keys[i&(len(keys)-1)]]
		}
	})
	runtime.KeepAlive(sum)
}

// BenchmarkLookupAgainstMap times Lookup and LookupBatch (as
// BenchmarkLookup and BenchmarkLookupBatch do, in batches of 1024) and the
// map baseline in turn, in chunks of 4096 lookups of the same keys, in one
// loop: all three see the same phases of a machine whose memory latency
// drifts by tens of percent within minutes, so their ratios to the map are
// steadier than figures from separate benchmarks. ns/op is per round of one
// lookup each.
func BenchmarkLookupAgainstMap(b *testing.B) {
	s := benchStore(b, benchKeys, 3)
	m := benchMap(benchKeys)
	for _, lt := range lookupTimes {
		keys, times := lookupPlan(benchKeys, 3, lt.newest)
		b.Run(lt.name, func(b *testing.B) { lookupAgainstMap(b, s, m, keys, times) })
	}
}

// BenchmarkLookupDisplacement is BenchmarkLookupAgainstMap at a recent time
// for keys found in their home slot and for keys linear probing put further
// on (about 7 in 10 and 3 in 10 of the keys).
func BenchmarkLookupDisplacement(b *testing.B) {
	s := benchStore(b, benchKeys, 3)
	m := benchMap(benchKeys)
	atHome := func(k Key128) bool {
		h := s.hash(k)
		tab := s.tableFor(h)
		return tab.slots[tab.home(h)].key == k
	}
	at := base.Add(2*70*time.Second + 30*time.Second) // in the newest range (see lookupPlan)
	r := rand.New(rand.NewPCG(1, 1))
	for _, home := range []bool{true, false} {
		ks, ts := make([]Key128, 0, 1<<16), make([]time.Time, 0, 1<<16)
		for len(ks) < cap(ks) {
			if k := benchKey(r.IntN(benchKeys)); atHome(k) == home {
				ks, ts = append(ks, k), append(ts, at)
			}
		}
		b.Run(fmt.Sprintf("home=%t", home), func(b *testing.B) { lookupAgainstMap(b, s, m, ks, ts) })
	}
}

func lookupAgainstMap(b *testing.B, s *Store[Key128], m map[Key128]uint64, keys []Key128, times []time.Time) {
	qs := make([]Query[Key128], len(keys))
	for i := range keys {
		qs[i] = Query[Key128]{keys[i], times[i]}
	}
	const chunk, batchSize = 1 << 12, 1 << 10
	out := make([]Result, 0, batchSize)
	var single, batch, plain time.Duration
	var sum uint64
	unattributed := 0
	startMeasure(b)
	for done := 0; done < b.N; done += chunk {
		off := done & (len(keys) - 1) // chunks never wrap: chunk divides len(keys)
		n := min(chunk, b.N-done)
		t0 := time.Now()
		for j := off; j < off+n; j++ {
			if s.Lookup(keys[j], times[j]).Status != Attributed {
				unattributed++
			}
		}
		t1 := time.Now()
		for j := off; j < off+n; j += batchSize {
			out = s.LookupBatch(qs[j:min(j+batchSize, off+n)], out[:0])
			for _, res := range out {
				if res.Status != Attributed {
					unattributed++
				}
			}
		}
		t2 := time.Now()
		for j := off; j < off+n; j++ {
			sum += m[keys[j]]
		}
		single, batch, plain = single+t1.Sub(t0), batch+t2.Sub(t1), plain+time.Since(t2)
	}
	runtime.KeepAlive(sum)
	if unattributed > 0 {
		b.Fatalf("%d lookups not attributed", unattributed)
	}
	b.ReportMetric(float64(single)/float64(b.N), "Lookup-ns")
	b.ReportMetric(float64(batch)/float64(b.N), "LookupBatch-ns")
	b.ReportMetric(float64(plain)/float64(b.N), "map-ns")
	b.ReportMetric(float64(single)/float64(plain), "Lookup/map")
	b.ReportMetric(float64(batch)/float64(plain), "LookupBatch/map")
}
