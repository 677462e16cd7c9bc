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
// computed for the touch. With a store much larger than the CPU caches this
// costs less than half as much as separate Lookups (BenchmarkLookupBatch). Like Lookup it takes no lock; concurrent
// Applies are seen or not per query, as by separate Lookups.
func (s *Store[K]) LookupBatch(qs []Query[K], out []Result) []Result {
	out = slices.Grow(out, len(qs))
	var touched uint32
	var hs [lookupAhead]uint64
	for len(qs) > 0 {
		n := min(len(qs), lookupAhead)
		// Hashing first keeps the slot loads close together in the
		// instruction stream: interleaved with the hash calls, only a few
		// of them fit in the CPU's reorder window and the misses hardly
		// overlap.
		for i := range qs[:n] {
			hs[i] = s.hash(qs[i].Key)
		}
		touched += s.touch(hs[:n])
		for i, q := range qs[:n] {
			out = append(out, s.lookup(q.Key, hs[i], q.At))
		}
		qs = qs[n:]
	}
	runtime.KeepAlive(touched) // the touching loads must not be optimised away
	return out
}

// touch brings into the CPU caches, level by level so that the loads of
// one level are independent of one another, what answering qs and writing
// their owners reads, given the keys' hashes: each key's home slot; the slot's older ranges and
// its trailing range's group; the group's owner; the owner's attributes and
// their names. It decides nothing: a slot being changed, or not the key's
// (a probe sequence's start), only makes the touch useless, not wrong.
// Everything past the slot is immutable once published.
func (s *Store[K]) touch(hs []uint64) uint32 {
	var slots [lookupAhead]*slot[K]
	var owners [lookupAhead]*Owner
	var attrs [lookupAhead][]Attribute
	var sum uint32
	n := len(hs)
	for i, h := range hs {
		tab := s.tableFor(h)
		slots[i] = &tab.slots[h&tab.mask]
	}
	var gis [lookupAhead]uint32
	for i, sl := range slots[:n] {
		gis[i] = sl.gi.Load() & giMask
	}
	for i, sl := range slots[:n] {
		if p := sl.older.Load(); p != nil {
			sum += uint32(p.start)
		}
		if gi := gis[i]; gi != giNeverUsed && gi != giDeleted {
			if g := s.in.groups.at(gi); g != nil {
				owners[i] = g.owner
			}
		}
	}
	for i, o := range owners[:n] {
		if o != nil {
			attrs[i] = o.Attributes
		}
	}
	for _, as := range attrs[:n] {
		for _, a := range as {
			sum += uint32(len(a.Name))
		}
	}
	for _, as := range attrs[:n] {
		for _, a := range as {
			if a.Name != "" {
				sum += uint32(a.Name[0])
			}
		}
	}
	return sum
}
