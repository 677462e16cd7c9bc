package intervalstore

import (
	"runtime"
	"slices"
	"time"
)

// Query is one lookup of a batch: who held Key at At.
type Query[K comparable] struct {
	Key K
	At  time.Time
}

// lookupAhead is how many keys LookupBatch touches before answering them: a
// random lookup in a large store waits on DRAM, and these independent loads
// let the CPU have that many misses outstanding at once.
const lookupAhead = 16

// LookupBatch appends to out the answer to each query, in order, and returns
// out. Each answer is exactly Lookup(q.Key, q.At): LookupBatch first touches
// what the lookups of up to lookupAhead keys will read (see touch), with
// loads that do not depend on one another, so that their cache misses
// overlap, then answers each query with Lookup's own code, reusing the hash
// and time computed for the touch. With a store much larger than the CPU
// caches this costs less than separate Lookups (BenchmarkLookupBatch). Like
// Lookup it takes no lock; concurrent Applies are seen or not per query, as
// by separate Lookups.
func (s *Store[K]) LookupBatch(qs []Query[K], out []Result) []Result {
	out = slices.Grow(out, len(qs))
	var touched uint32
	var keys [lookupAhead]K
	var hs [lookupAhead]uint64
	var ts [lookupAhead]int64
	for len(qs) > 0 {
		n := min(len(qs), lookupAhead)
		// Hashing first keeps the slot loads close together in the
		// instruction stream: interleaved with the hash calls, only a few
		// of them fit in the CPU's reorder window and the misses hardly
		// overlap.
		for i := range qs[:n] {
			keys[i] = qs[i].Key
			hs[i] = s.hash(qs[i].Key)
			ts[i] = nanos(qs[i].At)
		}
		touched += s.touch(keys[:n], hs[:n], ts[:n])
		for i := range qs[:n] {
			out = append(out, s.lookup(qs[i].Key, hs[i], ts[i]))
		}
		qs = qs[n:]
	}
	runtime.KeepAlive(touched) // the touching loads must not be optimised away
	return out
}

// touch brings into the CPU caches, level by level so that the loads of
// one level are independent of one another, what answering keys (whose
// hashes are hs) at the times ts reads: each key's home slot and the one
// after it, where a fifth of the keys sit; then, with those in the cache,
// the key's own slot; its trailing range's owner; and the older ranges
// (both ends of their array, which may span two cache lines) only for a key
// whose time's ClockSkew neighbourhood begins before its trailing range, as
// an answer from the trailing range reads none of them. It decides
// nothing: a slot being changed only makes the touch useless, not wrong.
// Everything past the slot is immutable once published, and an index read
// from a changing slot still names a group.
func (s *Store[K]) touch(keys []K, hs []uint64, ts []int64) uint32 {
	var tabs [lookupAhead]*table[K]
	var slots [lookupAhead]*slot[K]
	var olders [lookupAhead]*uint64
	var groups [lookupAhead]*group
	var sum uint32
	hs = hs[:min(len(hs), lookupAhead)]
	keys, ts = keys[:len(hs)], ts[:len(hs)]
	for i, h := range hs {
		tab := s.tableFor(h)
		j := tab.home(h)
		tabs[i] = tab
		sum += tab.slots[j].ver.Load() + tab.slots[tab.next(j)].ver.Load()
	}
	for i, h := range hs {
		slots[i] = tabs[i].lookup(keys[i], h) // in the cache now, mostly
	}
	gs := &s.in.groups
	for i := range hs {
		sl := slots[i]
		if sl == nil {
			continue
		}
		if subSat(ts[i], s.skew) < sl.start.Load() {
			olders[i] = sl.older.Load()
		}
		if gi := sl.gi.Load() & giMask; gi > giDeleted {
			groups[i] = gs.at(gi)
		}
	}
	for i := range hs {
		if a := loadOlder(olders[i]); len(a) > 0 {
			sum += uint32(a[len(a)-1])
		}
		if g := groups[i]; g != nil && g.owner != nil {
			sum += uint32(len(g.owner.ID))
		}
	}
	return sum
}
