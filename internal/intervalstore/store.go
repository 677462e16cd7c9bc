package intervalstore

import (
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowattr/flowattr/internal/owners"
)

// rng is one range, [start, end] in Unix nanoseconds, inclusive, held by
// g, as writers work on a key's ranges; a slot and its olderArray store the
// same with g as a number.
type rng struct {
	start, end int64
	g          *group
}

const (
	shardBits = 8
	nShards   = 1 << shardBits
)

// Store is a concurrent heartbeat-based ownership map. See the package doc.
type Store[K comparable] struct {
	now                  func() time.Time
	gap, skew, retention int64
	join                 int64 // gap+1: claims whose start-end distance is <= join are joined
	maxKeys              int
	maxRanges            int // per key: maxOlder+1; a field so that tests can lower it
	hasher               hasher[K]
	// shards split the keys by the hash's top bits so that growing a table
	// rehashes 1/nShards of them; readers load the table pointer and take no
	// lock (see table).
	shards               [nShards]atomic.Pointer[table[K]]
	wmu                  sync.Mutex // serialises writers; guards everything below
	in                   interner
	evict                evictQueue[K]
	keys, ranges, nConfl int
	conflicts, evictions uint64
	prunedRanges, epoch  uint64
	// collectAt is the number of interned groups at which apply collects
	// the unreferenced ones (see maybeCollect).
	collectAt     int
	full, scratch []rng
}

// New returns an empty store.
func New[K comparable](cfg Config) (*Store[K], error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Store[K]{
		now:       cfg.Now,
		gap:       int64(cfg.MergeGap),
		skew:      int64(cfg.ClockSkew),
		retention: int64(cfg.Retention),
		join:      addSat(int64(cfg.MergeGap), 1),
		maxKeys:   cfg.MaxKeys,
		maxRanges: maxOlder + 1,
		hasher:    newHasher[K](),
		collectAt: minCollectAt,
	}
	s.in.init()
	if s.now == nil {
		s.now = time.Now
	}
	// One empty table, never written (it is always too full to insert
	// into), stands for every shard until its first key.
	empty := newTable[K](1)
	for i := range s.shards {
		s.shards[i].Store(empty)
	}
	return s, nil
}

func (s *Store[K]) hash(key K) uint64 { return s.hasher.hash(key) }

func (s *Store[K]) tableFor(h uint64) *table[K] { return s.shards[h>>(64-shardBits)].Load() }

func (s *Store[K]) cutoff() int64 { return subSat(nanos(s.now()), s.retention) }

// Apply records that owner held key during [start, end], both inclusive.
// The owner is canonicalised and interned; the caller may reuse it.
func (s *Store[K]) Apply(key K, owner owners.Owner, start, end time.Time) (ApplyResult, error) {
	if owner.ID == "" {
		return ApplyResult{}, ErrEmptyOwner
	}
	cs, ce := nanos(start), nanos(end)
	if ce < cs {
		return ApplyResult{}, ErrEndBeforeStart
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	res, err := s.apply(key, s.hash(key), owner, cs, ce, s.cutoff())
	s.maybeCollect()
	return res, err
}

// apply is Apply of a validated claim (owner.ID not empty, cs <= ce) to key,
// whose hash is h, with the retention cutoff cut. The caller holds wmu.
func (s *Store[K]) apply(key K, h uint64, owner owners.Owner, cs, ce, cut int64) (ApplyResult, error) {
	if ce < cut {
		return ApplyResult{}, ErrExpired
	}
	sl := s.tableFor(h).find(key, h)
	if !sl.live() {
		return s.insert(key, h, s.in.owner(owner), cs, ce), nil
	}
	sl.setReferenced(true)
	g, ls, le := s.in.groups.at(sl.gi.Load()&giMask), sl.start.Load(), sl.end.Load()
	// Fast path: a claim of the trailing range's owner extends it. An
	// owner given in canonical form is recognised without interning.
	if cs >= ls && cs <= addSat(le, s.join) && (g.owner != nil && g.owner.ID == owner.ID &&
		slices.Equal(g.owner.Attributes, owner.Attributes) || g == s.in.owner(owner)) {
		if ce > le {
			sl.end.Store(ce)
		}
		return ApplyResult{}, nil
	}
	og := s.in.owner(owner)
	var res ApplyResult
	s.full = sl.ranges(&s.in.groups, s.full[:0])
	s.full, res.Conflict = s.merge(s.full, og, cs, ce)
	rs, pruned := s.full, sl.pruned()
	if d := len(rs) - s.maxRanges; d > 0 {
		// Beyond maxOlder+1 ranges the oldest go as if pruned.
		s.nConfl -= countConflicts(rs[:d])
		s.ranges -= d
		s.prunedRanges += uint64(d)
		rs, pruned = rs[d:], true
	}
	sl.set(rs, pruned)
	clear(s.full)
	if res.Conflict {
		s.conflicts++
	}
	return res, nil
}

// insert adds key, which has no ranges, with the claim (og, [cs, ce]),
// evicting keys first if the store is full. The caller holds wmu.
func (s *Store[K]) insert(key K, h uint64, og *group, cs, ce int64) ApplyResult {
	res := ApplyResult{NewKey: true}
	for s.keys >= s.maxKeys {
		s.evictOne()
		res.Evicted++
	}
	tab := s.tableFor(h)
	sl := tab.find(key, h)
	if sl.gi.Load() == giNeverUsed {
		if tab.full() {
			tab = tab.rebuilt(&s.hasher)
			s.shards[h>>(64-shardBits)].Store(tab)
			sl = tab.find(key, h)
		}
		sl.key = key // never used: no reader reads it before gi is set below
		tab.used++
	}
	tab.live++
	sl.ver.Add(1)
	sl.older.Store(nil)
	sl.start.Store(cs)
	sl.end.Store(ce)
	sl.gi.Store(og.idx)
	sl.ver.Add(1)
	s.evict.push(key)
	s.keys++
	s.ranges++
	return res
}

// merge adds the claim (og, [cs, ce]) to rs and returns the new list and
// whether the claim covers time another owner covered and og's owner did not.
// The caller holds the shard's write lock.
func (s *Store[K]) merge(rs []rng, og *group, cs, ce int64) ([]rng, bool) {
	id := og.owner.ID
	// Find og's existing components within MergeGap of the claim: they join it.
	lo, hi := subSat(cs, s.join), addSat(ce, s.join)
	S, E := cs, ce
	winner, wEnd := og, ce
	first, last := -1, -1
	for j := search(rs, lo); j < len(rs) && rs[j].start <= hi; j++ {
		if rs[j].g.member(id) != nil {
			if first < 0 {
				first = j
			}
			last = j
		}
	}
	if first >= 0 {
		for first > 0 && rs[first-1].end+1 == rs[first].start && rs[first-1].g.member(id) != nil {
			first--
		}
		for last+1 < len(rs) && rs[last].end+1 == rs[last+1].start && rs[last+1].g.member(id) != nil {
			last++
		}
		S, E = min(S, rs[first].start), max(E, rs[last].end)
		for j := first; j <= last; j++ {
			m := rs[j].g.member(id)
			if m == nil || (j < last && rs[j].end+1 == rs[j+1].start && rs[j+1].g.member(id) != nil) {
				continue // not og's owner, or not the end of its component
			}
			if e := rs[j].end; e > wEnd || (e == wEnd && cmpAttrs(m.owner.Attributes, winner.owner.Attributes) > 0) {
				winner, wEnd = m, e
			}
		}
	}

	// Rebuild the ranges overlapping [S, E]: og's owner (as winner) joins
	// every range there and fills the holes.
	a := search(rs, S)
	b := a
	for b < len(rs) && rs[b].start <= E {
		b++
	}
	out := s.scratch[:0]
	conflict := false
	cur, done := S, false
	for _, r := range rs[a:b] {
		if r.start < S {
			out = append(out, rng{r.start, S - 1, r.g})
		}
		ps, pe := max(r.start, S), min(r.end, E)
		if ps > cur {
			out = append(out, rng{cur, ps - 1, winner})
		}
		if r.g.member(id) == nil {
			conflict = true
		}
		out = append(out, rng{ps, pe, s.in.with(r.g, winner)})
		if r.end > E {
			out = append(out, rng{E + 1, r.end, r.g})
		}
		if pe == math.MaxInt64 {
			done = true
		} else {
			cur = pe + 1
		}
	}
	if !done && cur <= E {
		out = append(out, rng{cur, E, winner})
	}
	// Include the untouched neighbours so that equal adjacent ranges coalesce.
	if a > 0 {
		out = slices.Insert(out, 0, rs[a-1])
		a--
	}
	if b < len(rs) {
		out = append(out, rs[b])
		b++
	}
	out = coalesce(out)
	s.ranges += len(out) - (b - a)
	s.nConfl += countConflicts(out) - countConflicts(rs[a:b])
	s.scratch = out[:0]
	rs = slices.Replace(rs, a, b, out...)
	clear(out)
	return rs, conflict
}

// coalesce joins adjacent touching ranges of the same group, in place.
func coalesce(rs []rng) []rng {
	w := 0
	for i := 1; i < len(rs); i++ {
		if rs[w].g == rs[i].g && rs[w].end+1 == rs[i].start {
			rs[w].end = rs[i].end
			continue
		}
		w++
		rs[w] = rs[i]
	}
	return rs[:w+1]
}

func countConflicts(rs []rng) int {
	n := 0
	for _, r := range rs {
		if r.g.owner == nil {
			n++
		}
	}
	return n
}

// search returns the index of the first range with end >= t.
func search(rs []rng, t int64) int {
	lo, hi := 0, len(rs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if rs[m].end < t {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// Lookup answers who held key at time t. It takes no lock and never waits
// for other lookups; it retries only while a writer changes key's ranges.
func (s *Store[K]) Lookup(key K, t time.Time) Result {
	return s.lookup(key, s.hash(key), nanos(t))
}

// lookup is Lookup with key's hash h and the time tn, in Unix nanoseconds,
// already computed, so that LookupBatch, which needs both before answering,
// does not compute them twice.
func (s *Store[K]) lookup(key K, h uint64, tn int64) Result {
	tab := s.tableFor(h)
	sl := tab.lookup(key, h)
	if sl != nil {
		if o := s.trailingOwner(tab, sl, h, tn); o != nil {
			return Result{Owner: o, Status: Attributed}
		}
	}
	return s.lookupSlow(key, h, tn, tab, sl)
}

// trailingOwner answers the common lookup, at a time t whose ClockSkew
// neighbourhood lies in the trailing range of an owner, from sl, a slot of
// tab, the table of the shard of the key whose hash is h: it returns that
// owner, or nil if the lookup is not that case or sl was changing or tab is
// no longer the shard's table (see answer). It reads one word of the group
// index and takes no branch that a CPU would mispredict in the common case,
// so that the CPU goes on to the next lookup while this one waits for
// memory.
func (s *Store[K]) trailingOwner(tab *table[K], sl *slot[K], h uint64, t int64) *owners.Owner {
	v := sl.ver.Load()
	start, end := sl.start.Load(), sl.end.Load()
	// A free or never-used index resolves to no owner; gi names the owner
	// it did when read if the slot and its table are unchanged below (see
	// groupIndex).
	o := s.in.groups.owner(sl.gi.Load() & giMask)
	if o != nil && subSat(t, s.skew) >= start && addSat(t, s.skew) <= end &&
		v&1 == 0 && sl.ver.Load() == v && s.tableFor(h) == tab {
		return o
	}
	return nil
}

// lookupSlow is lookup for every case, from key's slot sl (nil if none) in
// tab, the table of its shard when lookup read it.
func (s *Store[K]) lookupSlow(key K, h uint64, tn int64, tab *table[K], sl *slot[K]) Result {
	for {
		res := Result{Reason: ReasonNoClaim}
		if sl != nil {
			var current bool
			if res, current = s.answer(tab, sl, h, tn); !current {
				// The shard's table was replaced: read the new one.
				tab = s.tableFor(h)
				sl = tab.lookup(key, h)
				continue
			}
		}
		// Covered times are answered from the ranges held; only
		// unattributed answers need the clock to tell expired history
		// apart.
		if res.Status == Unattributed && tn < s.cutoff() {
			res.Reason = ReasonExpired
		}
		return res
	}
}

// answer answers a lookup at t from sl's ranges, sl being a slot of tab, the
// table of the shard of the key whose hash is h. It never blocks a writer:
// it answers from what it read and keeps the answer only if the slot did not
// change meanwhile, else it reads again. It reports false if tab is no
// longer the shard's table: writers no longer change tab's slots, so their
// sequence numbers cannot tell that the group numbers read from them were
// freed and reused since (see groupIndex). A time whose ClockSkew
// neighbourhood lies within the trailing range, the common case, reads
// nothing beyond the slot and its group.
func (s *Store[K]) answer(tab *table[K], sl *slot[K], h uint64, t int64) (Result, bool) {
	gs := &s.in.groups
	for spins := 0; ; spins++ {
		v := sl.ver.Load()
		if v&1 == 0 {
			gi := sl.gi.Load() & giMask
			last := rng{start: sl.start.Load(), end: sl.end.Load()}
			p := sl.older.Load()
			var res Result
			switch gi {
			case giDeleted:
				res = Result{Reason: ReasonNoClaim}
			default:
				// gi, and the indexes in the older array, name the
				// groups they did when read if the slot is unchanged
				// below (see groupIndex).
				last.g = gs.at(gi)
				if o := last.g.owner; o != nil && subSat(t, s.skew) >= last.start && addSat(t, s.skew) <= last.end {
					// The trailing range covers [t-ClockSkew, t+ClockSkew].
					res = Result{Owner: o, Status: Attributed}
				} else {
					res = s.resolve(loadOlder(p), &last, t)
				}
			}
			if sl.ver.Load() == v {
				return res, s.tableFor(h) == tab
			}
		}
		if spins >= 16 {
			runtime.Gosched() // the writer may have been preempted mid-change
		}
	}
}

// resolve answers a lookup at t from a key's ranges: older followed by
// last.
func (s *Store[K]) resolve(older olderArray, last *rng, t int64) Result {
	gs := &s.in.groups
	n := older.len()
	at := func(i int) rng {
		if i < n {
			return rng{older.start(i), older.end(i), gs.at(older.gi(i))}
		}
		return *last
	}
	var i int
	switch {
	case t > last.end:
		return Result{Reason: ReasonAfterLastClaim}
	case t >= last.start:
		i = n
	default:
		i = older.search(t)
	}
	r := at(i)
	switch {
	case r.start > t && (i > 0 || older.pruned()):
		return Result{Reason: ReasonGap}
	case r.start > t:
		return Result{Reason: ReasonBeforeFirstClaim}
	}
	g := r.g
	if g.owner == nil {
		return Result{Status: Conflict, Reason: ReasonOverlappingClaims}
	}
	lo, hi := subSat(t, s.skew), addSat(t, s.skew)
	if lo >= r.start && hi <= r.end {
		return Result{Owner: g.owner, Status: Attributed}
	}
	// The neighbourhood leaves the owner's range. Ranges are maximal and an
	// owner's components never touch, so what lies beyond is another owner,
	// a conflict, or time no claim covers yet.
	id := g.owner.ID
	for j := i - 1; j >= 0 && at(j).end >= lo; j-- {
		if at(j).g.hasOther(id) {
			return Result{Status: Uncertain, Reason: ReasonNearOwnerChange}
		}
	}
	for j := i + 1; j <= n && at(j).start <= hi; j++ {
		if at(j).g.hasOther(id) {
			return Result{Status: Uncertain, Reason: ReasonNearOwnerChange}
		}
	}
	return Result{Reason: ReasonNearUnclaimedEdge}
}

// evictOne removes the key that the eviction queue gives up. The caller
// holds wmu.
func (s *Store[K]) evictOne() {
	for {
		key := s.evict.pop()
		h := s.hash(key)
		tab := s.tableFor(h)
		sl := tab.lookup(key, h)
		if sl.referenced() {
			sl.setReferenced(false) // claimed since it was queued: second chance
			s.evict.push(key)
			continue
		}
		s.full = sl.ranges(&s.in.groups, s.full[:0])
		s.keys--
		s.ranges -= len(s.full)
		s.nConfl -= countConflicts(s.full)
		clear(s.full)
		s.evictions++
		sl.remove()
		tab.live--
		return
	}
}

// minCollectAt is the fewest interned groups at which apply collects.
const minCollectAt = 1024

// maybeCollect forgets the interned owners and owner sets that no range
// references once there are collectAt of them, so that their memory is a
// function of the store's limits, not of how many owners claims named: a
// flood of claims for distinct keys and owners evicts keys at MaxKeys, and
// without this their owners would stay until the next Prune. The next
// collection waits until the groups have grown by a quarter of those still
// referenced plus a sixteenth of the keys, so that its cost, a pass over
// every key, is amortised over at least keys/16 groups interned since. It runs only between
// applies, when every group an apply interned is referenced. The caller
// holds wmu.
func (s *Store[K]) maybeCollect() {
	if s.in.groupCount() < s.collectAt {
		return
	}
	s.epoch++
	s.markReferenced(s.epoch)
	s.in.sweep(s.epoch)
	live := s.in.groupCount()
	s.collectAt = max(live+live/4+s.keys/16, minCollectAt)
}

// markReferenced marks every group a live range references with epoch. The caller
// holds wmu.
func (s *Store[K]) markReferenced(epoch uint64) {
	for i := range s.shards {
		tab := s.shards[i].Load()
		for j := range tab.slots {
			sl := &tab.slots[j]
			if !sl.live() {
				continue
			}
			s.full = sl.ranges(&s.in.groups, s.full[:0])
			for _, r := range s.full {
				markLive(r.g, epoch)
			}
		}
	}
	clear(s.full)
}

// Prune drops ranges that ended before now-Retention, keys left empty, and
// interned owners no longer referenced. The caller runs it periodically.
func (s *Store[K]) Prune() (rangesDropped, keysDropped int) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	cut := s.cutoff()
	s.epoch++
	for i := range s.shards {
		tab := s.shards[i].Load()
		for j := range tab.slots {
			sl := &tab.slots[j]
			if !sl.live() {
				continue
			}
			rs := sl.ranges(&s.in.groups, s.full[:0])
			s.full = rs
			n := search(rs, cut) // ranges before n ended before the cutoff
			if n > 0 {
				rangesDropped += n
				s.nConfl -= countConflicts(rs[:n])
				if n == len(rs) {
					sl.remove()
					tab.live--
					keysDropped++
					continue
				}
				rs = rs[n:]
				sl.set(rs, true)
			}
			for _, r := range rs {
				markLive(r.g, s.epoch)
			}
		}
		clear(s.full)
		// Drop tombstones once they outnumber the keys.
		if tab.used-tab.live > tab.live && len(tab.slots) > 8 {
			s.shards[i].Store(tab.rebuilt(&s.hasher))
		}
	}
	s.in.sweep(s.epoch)
	s.keys -= keysDropped
	s.ranges -= rangesDropped
	s.prunedRanges += uint64(rangesDropped)
	if keysDropped > 0 {
		s.evict.filter(func(k K) bool {
			h := s.hash(k)
			sl := s.tableFor(h).lookup(k, h)
			return sl != nil && sl.live()
		})
	}
	return rangesDropped, keysDropped
}

// Stats returns a snapshot of sizes and counters.
func (s *Store[K]) Stats() Stats {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return Stats{
		Keys:           s.keys,
		Ranges:         s.ranges,
		ConflictRanges: s.nConfl,
		Owners:         s.in.nOwners,
		Conflicts:      s.conflicts,
		Evictions:      s.evictions,
		PrunedRanges:   s.prunedRanges,
	}
}

var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// nanos converts t to Unix nanoseconds, saturating outside 1678..2262.
func nanos(t time.Time) int64 {
	// Within ±285 years of 1970, UnixNano is exact: skip the range checks.
	if sec := t.Unix(); sec > -9e9 && sec < 9e9 {
		return t.UnixNano()
	}
	switch {
	case t.Before(minTime):
		return math.MinInt64
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// addSat returns a+d (d >= 0), saturating at math.MaxInt64.
func addSat(a, d int64) int64 {
	if a > math.MaxInt64-d {
		return math.MaxInt64
	}
	return a + d
}

// subSat returns a-d (d >= 0), saturating at math.MinInt64.
func subSat(a, d int64) int64 {
	if a < math.MinInt64+d {
		return math.MinInt64
	}
	return a - d
}
