package intervalstore

import (
	"slices"
	"time"
	"unsafe"
)

// Query is one lookup of a batch: who held Key at At.
type Query[K comparable] struct {
	Key K
	At  time.Time
}

// lookupAhead is how many queries ahead LookupBatch prefetches a key's
// slot: a random lookup in a large store waits on memory, and prefetches,
// unlike loads, let the CPU go on with other work, keeping that many misses
// outstanding at once.
const lookupAhead = 16

// LookupBatch appends to out the answer to each query, in order, and returns
// out. Each answer is exactly Lookup(q.Key, q.At). While it answers one
// query, LookupBatch prefetches the slot of the key lookupAhead queries
// ahead, so that the cache misses of many keys overlap with each other and
// with the answering. With a store much larger than the CPU caches this
// costs less than separate Lookups (BenchmarkLookupAgainstMap). It does not
// prefetch a key's older ranges, which an answer reads only for a time
// before its trailing range: finding them would mean probing for the key
// twice, which costs the common lookup, of a recent time, more than it
// saves the others. Like Lookup it takes no lock; concurrent Applies are
// seen or not per query, as by separate Lookups.
func (s *Store[K]) LookupBatch(qs []Query[K], out []Result) []Result {
	out = slices.Grow(out, len(qs))
	// The hashes and times of the queries ahead, by index mod lookupAhead.
	var hs [lookupAhead]uint64
	var ts [lookupAhead]int64
	for i := range min(len(qs), lookupAhead) {
		hs[i], ts[i] = s.prefetchSlot(qs[i])
	}
	for i := range qs {
		h, t := hs[i%lookupAhead], ts[i%lookupAhead]
		if j := i + lookupAhead; j < len(qs) {
			hs[i%lookupAhead], ts[i%lookupAhead] = s.prefetchSlot(qs[j])
		}
		out = append(out, s.lookup(qs[i].Key, h, t))
	}
	return out
}

// prefetchSlot prefetches the two cache lines from the home slot of q's key
// on, which hold that slot and most of the next, and
// returns the key's hash and q's time in Unix nanoseconds.
func (s *Store[K]) prefetchSlot(q Query[K]) (uint64, int64) {
	h := s.hash(q.Key)
	tab := s.tableFor(h)
	prefetch(unsafe.Pointer(&tab.slots[tab.home(h)]))
	return h, nanos(q.At)
}
