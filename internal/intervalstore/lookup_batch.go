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
// out. Each answer is exactly Lookup(q.Key, q.At): LookupBatch first reads
// the home slot (and its trailing range's group) of up to lookupAhead keys,
// loads that do not depend on one another, so that their cache misses
// overlap, then answers each query with Lookup itself. With a store much
// larger than the CPU caches this costs a fraction of separate Lookups.
// Like Lookup it takes no lock; concurrent Applies are seen or not per
// query, as by separate Lookups.
func (s *Store[K]) LookupBatch(qs []Query[K], out []Result) []Result {
	out = slices.Grow(out, len(qs))
	var touched uint32
	for len(qs) > 0 {
		n := min(len(qs), lookupAhead)
		touched += s.touch(qs[:n])
		for _, q := range qs[:n] {
			out = append(out, s.Lookup(q.Key, q.At))
		}
		qs = qs[n:]
	}
	runtime.KeepAlive(touched) // the touching loads must not be optimised away
	return out
}

// touch loads each query's home slot, then the group of each slot's trailing
// range, into the CPU caches. It decides nothing: a slot being changed or
// past a probe sequence's start only makes the touch useless, not wrong.
func (s *Store[K]) touch(qs []Query[K]) uint32 {
	var slots [lookupAhead]*slot[K]
	var sum uint32
	for i, q := range qs {
		h := s.hash(q.Key)
		tab := s.tableFor(h)
		sl := &tab.slots[h&tab.mask]
		sum += sl.ver.Load()
		slots[i] = sl
	}
	for _, sl := range slots[:len(qs)] {
		// Groups are immutable once published through g.
		if g := sl.g.Load(); g != nil && g.owner != nil {
			sum++
		}
	}
	return sum
}
