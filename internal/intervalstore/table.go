package intervalstore

import (
	"runtime"
	"slices"
	"sync/atomic"
	"unsafe"
)

// table is one shard's open-addressing hash table (linear probing) with
// the key's state stored in its slot, so that a lookup of a recent time
// touches a single slot and nothing else.
//
// Readers take no lock. Writers (serialised by Store.wmu) follow three rules
// that make that safe:
//   - A slot's key is written once, while its group is still nil, and never
//     again; readers read the key only after loading a non-nil group. A
//     deleted key leaves a tombstone (its key stays) that only the same key
//     can revive; other keys go to never-used slots, and a rebuild into a
//     new table, published atomically, clears tombstones.
//   - The other fields change under the slot's sequence lock (ver odd while
//     changing), except the trailing range's end when a heartbeat extends
//     it, which is a single atomic store that is consistent on its own.
//   - The arrays of older ranges are immutable once published.
type table[K comparable] struct {
	slots      []slot[K]
	mask       uint64
	used, live int // writer-only: slots ever used (live + tombstones), live keys
}

// slot is a key's state: its newest (trailing) range inline and the older
// ranges in a separate immutable array. For netip.Addr keys it is 64 bytes.
type slot[K comparable] struct {
	ver   atomic.Uint32 // sequence lock, odd while a writer changes the slot
	meta  atomic.Uint32 // number of older ranges << 2 | metaPruned | metaReferenced
	key   K
	g     atomic.Pointer[group] // trailing range's group; nil: never used; tombstone: deleted
	start atomic.Int64          // trailing range
	end   atomic.Int64
	older atomic.Pointer[rng] // first of the older ranges, sorted; nil if none
}

const (
	// metaReferenced: the key was given a claim since it last entered the
	// eviction queue.
	metaReferenced = 1 << iota
	// metaPruned: Prune dropped earlier ranges of the key.
	metaPruned
	metaCountShift = iota
	// maxOlder bounds the older ranges of one key by the bits of meta; at 24
	// bytes a range, that is 24 GiB for a single key.
	maxOlder = 1<<(32-metaCountShift) - 1
)

// tombstone marks a deleted key's slot.
var tombstone = &group{}

// view is a consistent snapshot of a live key's ranges: older then last.
type view struct {
	older  []rng
	last   rng
	pruned bool
}

func newTable[K comparable](capacity int) *table[K] {
	return &table[K]{slots: make([]slot[K], capacity), mask: uint64(capacity - 1)}
}

// lookup returns key's slot, live or deleted, or nil.
func (t *table[K]) lookup(key K, h uint64) *slot[K] {
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		sl := &t.slots[i]
		g := sl.g.Load()
		if g == nil {
			return nil
		}
		if sl.key == key {
			return sl
		}
	}
}

// find returns key's slot, live or deleted, or the never-used slot where it
// would be inserted. Writers only.
func (t *table[K]) find(key K, h uint64) *slot[K] {
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		sl := &t.slots[i]
		if sl.g.Load() == nil || sl.key == key {
			return sl
		}
	}
}

// full reports whether using one more slot would exceed a 3/4 load.
func (t *table[K]) full() bool { return (t.used+1)*4 > len(t.slots)*3 }

// rebuilt returns a new table holding t's live keys at a load of at most
// 1/2 after one more insertion: a full table (3/4) doubles rather than
// quadruples.
func (t *table[K]) rebuilt(h func(K) uint64) *table[K] {
	n := 8
	for n < (t.live+1)*2 {
		n *= 2
	}
	nt := newTable[K](n)
	for i := range t.slots {
		sl := &t.slots[i]
		if g := sl.g.Load(); g == nil || g == tombstone {
			continue
		}
		ns := nt.find(sl.key, h(sl.key))
		ns.key = sl.key
		ns.meta.Store(sl.meta.Load())
		ns.start.Store(sl.start.Load())
		ns.end.Store(sl.end.Load())
		ns.older.Store(sl.older.Load())
		ns.g.Store(sl.g.Load())
		nt.used++
		nt.live++
	}
	return nt
}

// live reports whether the slot holds a key.
func (sl *slot[K]) live() bool {
	g := sl.g.Load()
	return g != nil && g != tombstone
}

// read returns a consistent snapshot of the slot, or false if the key was
// deleted. It never blocks a writer; it retries while one is changing the
// slot.
func (sl *slot[K]) read() (view, bool) {
	for spins := 0; ; spins++ {
		v := sl.ver.Load()
		if v&1 == 0 {
			g := sl.g.Load()
			st, en := sl.start.Load(), sl.end.Load()
			m := sl.meta.Load()
			p := sl.older.Load()
			if sl.ver.Load() == v {
				if g == tombstone {
					return view{}, false
				}
				return view{older: olderSlice(p, m), last: rng{st, en, g}, pruned: m&metaPruned != 0}, true
			}
		}
		if spins >= 16 {
			runtime.Gosched() // the writer may have been preempted mid-change
		}
	}
}

func olderSlice(p *rng, meta uint32) []rng {
	if p == nil {
		return nil
	}
	return unsafe.Slice(p, meta>>metaCountShift)
}

// ranges returns the slot's ranges, appended to buf. Writers only.
func (sl *slot[K]) ranges(buf []rng) []rng {
	buf = append(buf, olderSlice(sl.older.Load(), sl.meta.Load())...)
	return append(buf, rng{sl.start.Load(), sl.end.Load(), sl.g.Load()})
}

// set replaces the slot's ranges with rs (not empty, at most maxOlder+1),
// keeping the older array when it is unchanged. Writers only.
func (sl *slot[K]) set(rs []rng, pruned bool) {
	old := olderSlice(sl.older.Load(), sl.meta.Load())
	older := rs[:len(rs)-1]
	p := sl.older.Load()
	if !slices.Equal(old, older) {
		p = nil
		if len(older) > 0 {
			p = &append([]rng(nil), older...)[0]
		}
	}
	m := uint32(len(older))<<metaCountShift | sl.meta.Load()&metaReferenced
	if pruned {
		m |= metaPruned
	}
	last := rs[len(rs)-1]
	sl.ver.Add(1)
	sl.older.Store(p)
	sl.meta.Store(m)
	sl.start.Store(last.start)
	sl.end.Store(last.end)
	sl.g.Store(last.g)
	sl.ver.Add(1)
}

// remove deletes the slot's key, leaving a tombstone. Writers only.
func (sl *slot[K]) remove() {
	sl.ver.Add(1)
	sl.g.Store(tombstone)
	sl.older.Store(nil)
	sl.meta.Store(0)
	sl.ver.Add(1)
}

// setReferenced sets or clears metaReferenced. Writers only.
func (sl *slot[K]) setReferenced(on bool) {
	m := sl.meta.Load()
	if (m&metaReferenced != 0) == on {
		return
	}
	sl.meta.Store(m ^ metaReferenced)
}

func (sl *slot[K]) referenced() bool { return sl.meta.Load()&metaReferenced != 0 }
