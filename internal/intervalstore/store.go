package intervalstore

import (
	"hash/maphash"
	"math"
	"slices"
	"sync"
	"time"
)

// rng is one stored range: [start, end] in Unix nanoseconds, inclusive.
type rng struct {
	start, end int64
	g          *group
}

// slot is a key's state.
type slot struct {
	rs     []rng  // sorted, non-overlapping, canonical (see package doc)
	seq    uint64 // Apply sequence number of the key's last claim (eviction order)
	pruned bool   // Prune dropped earlier ranges of this key
}

const nShards = 256

type shard[K comparable] struct {
	mu sync.RWMutex
	m  map[K]slot
	_  [64 - 8]byte // keep shards on separate cache lines
}

// Store is a concurrent heartbeat-based ownership map. See the package doc.
type Store[K comparable] struct {
	now                  func() time.Time
	gap, skew, retention int64
	join                 int64 // gap+1: claims whose start-end distance is <= join are joined
	maxKeys              int
	seed                 maphash.Seed
	shards               [nShards]shard[K]
	wmu                  sync.Mutex // serialises writers; guards everything below
	in                   interner
	lru                  lruHeap[K]
	seq                  uint64
	keys, ranges, nConfl int
	conflicts, evictions uint64
	prunedRanges, epoch  uint64
	scratch              []rng
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
		seed:      maphash.MakeSeed(),
		in:        newInterner(),
	}
	if s.now == nil {
		s.now = time.Now
	}
	for i := range s.shards {
		s.shards[i].m = make(map[K]slot)
	}
	return s, nil
}

func (s *Store[K]) shardFor(key K) *shard[K] {
	return &s.shards[maphash.Comparable(s.seed, key)%nShards]
}

func (s *Store[K]) cutoff() int64 { return subSat(nanos(s.now()), s.retention) }

// Apply records that owner held key during [start, end], both inclusive.
// The owner is canonicalised and interned; the caller may reuse it.
func (s *Store[K]) Apply(key K, owner Owner, start, end time.Time) (ApplyResult, error) {
	if owner.ID == "" {
		return ApplyResult{}, ErrEmptyOwner
	}
	cs, ce := nanos(start), nanos(end)
	if ce < cs {
		return ApplyResult{}, ErrEndBeforeStart
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if ce < s.cutoff() {
		return ApplyResult{}, ErrExpired
	}
	og := s.in.owner(owner)
	s.seq++
	sh := s.shardFor(key)
	var res ApplyResult
	sl, ok := sh.m[key] // writers are serialised by wmu, so reading needs no shard lock
	if !ok {
		for s.keys >= s.maxKeys {
			s.evictOldest()
			res.Evicted++
		}
		res.NewKey = true
		sh.mu.Lock()
		sh.m[key] = slot{rs: []rng{{cs, ce, og}}, seq: s.seq}
		sh.mu.Unlock()
		s.lru.push(key, s.seq)
		s.keys++
		s.ranges++
		return res, nil
	}
	sl.seq = s.seq
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if last := &sl.rs[len(sl.rs)-1]; last.g == og && cs >= last.start && cs <= addSat(last.end, s.join) {
		// Fast path: a heartbeat of the key's trailing owner range.
		last.end = max(last.end, ce)
	} else {
		sl.rs, res.Conflict = s.merge(sl.rs, og, cs, ce)
		if res.Conflict {
			s.conflicts++
		}
	}
	sh.m[key] = sl
	return res, nil
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

// Lookup answers who held key at time t. It never blocks on other lookups
// and takes only the key's shard read lock.
func (s *Store[K]) Lookup(key K, t time.Time) Result {
	tn := nanos(t)
	sh := s.shardFor(key)
	sh.mu.RLock()
	sl, ok := sh.m[key]
	var res Result
	if ok {
		res = s.resolve(sl, tn)
	} else {
		res.Reason = ReasonNoClaim
	}
	sh.mu.RUnlock()
	// Covered times are answered from the ranges held; only unattributed
	// answers need the clock to tell expired history apart.
	if res.Status == Unattributed && tn < s.cutoff() {
		res.Reason = ReasonExpired
	}
	return res
}

func (s *Store[K]) resolve(sl slot, t int64) Result {
	rs := sl.rs
	i := search(rs, t)
	switch {
	case i == len(rs):
		return Result{Reason: ReasonAfterLastClaim}
	case rs[i].start > t && (i > 0 || sl.pruned):
		return Result{Reason: ReasonGap}
	case rs[i].start > t:
		return Result{Reason: ReasonBeforeFirstClaim}
	}
	g := rs[i].g
	if g.owner == nil {
		return Result{Status: Conflict, Reason: ReasonOverlappingClaims}
	}
	if s.skew > 0 {
		id := g.owner.ID
		for j, lo := i-1, subSat(t, s.skew); j >= 0 && rs[j].end >= lo; j-- {
			if rs[j].g.hasOther(id) {
				return Result{Status: Uncertain, Reason: ReasonNearOwnerChange}
			}
		}
		for j, hi := i+1, addSat(t, s.skew); j < len(rs) && rs[j].start <= hi; j++ {
			if rs[j].g.hasOther(id) {
				return Result{Status: Uncertain, Reason: ReasonNearOwnerChange}
			}
		}
	}
	return Result{Owner: g.owner, Status: Attributed}
}

// evictOldest removes the key whose last claim is the oldest. The caller
// holds wmu and no shard lock.
func (s *Store[K]) evictOldest() {
	for {
		key, seq := s.lru.min()
		sh := s.shardFor(key)
		sl := sh.m[key]
		if sl.seq != seq {
			s.lru.fixMin(sl.seq) // claimed since it was queued: requeue lazily
			continue
		}
		s.lru.popMin()
		sh.mu.Lock()
		delete(sh.m, key)
		sh.mu.Unlock()
		s.keys--
		s.ranges -= len(sl.rs)
		s.nConfl -= countConflicts(sl.rs)
		s.evictions++
		return
	}
}

// Prune drops ranges that ended before now-Retention, keys left empty, and
// interned owners no longer referenced. The caller runs it periodically.
func (s *Store[K]) Prune() (rangesDropped, keysDropped int) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	cut := s.cutoff()
	s.epoch++
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, sl := range sh.m {
			n := search(sl.rs, cut) // ranges before n ended before the cutoff
			if n > 0 {
				rangesDropped += n
				s.nConfl -= countConflicts(sl.rs[:n])
				if n == len(sl.rs) {
					delete(sh.m, k)
					keysDropped++
					continue
				}
				m := copy(sl.rs, sl.rs[n:])
				clear(sl.rs[m:])
				sl.rs, sl.pruned = sl.rs[:m], true
				sh.m[k] = sl
			}
			for _, r := range sl.rs {
				markLive(r.g, s.epoch)
			}
		}
		sh.mu.Unlock()
	}
	s.in.sweep(s.epoch)
	s.keys -= keysDropped
	s.ranges -= rangesDropped
	s.prunedRanges += uint64(rangesDropped)
	if keysDropped > 0 {
		s.lru.filter(func(k K) (uint64, bool) {
			sl, ok := s.shardFor(k).m[k]
			return sl.seq, ok
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
