package intervalstore

import (
	"math/bits"
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
//   - A slot's key is written once, while its gi is still giNeverUsed, and
//     never again; readers read the key only after loading another gi. A
//     deleted key leaves a tombstone (its key stays) that only the same key
//     can revive; other keys go to never-used slots, and a rebuild into a
//     new table, published atomically, clears tombstones.
//   - The other fields change under the slot's sequence lock (ver odd while
//     changing), except the trailing range's end when a heartbeat extends
//     it, which is a single atomic store that is consistent on its own, and
//     the slotReferenced bit, which readers ignore.
//   - The arrays of older ranges are immutable once published.
type table[K comparable] struct {
	slots      []slot[K]
	used, live int // writer-only: slots ever used (live + tombstones), live keys
}

// slot is a key's state: its newest (trailing) range inline, with its group
// as an index (see groupIndex), and the older ranges in a separate immutable
// array. For Key128 keys it is 48 bytes and holds one pointer.
type slot[K comparable] struct {
	ver   atomic.Uint32 // sequence lock, odd while a writer changes the slot
	gi    atomic.Uint32 // trailing range's group index | slotReferenced, or giNeverUsed, giDeleted
	key   K
	start atomic.Int64 // trailing range
	end   atomic.Int64
	older atomic.Pointer[rng] // the older ranges' header (see newOlder), or nil
}

const (
	giNeverUsed = 0
	giDeleted   = 1
	// slotReferenced, a bit of gi, marks a key given a claim since it last
	// entered the eviction queue.
	slotReferenced = 1 << 31
	giMask         = slotReferenced - 1

	// olderPruned, in the older ranges' header, marks a key whose earlier
	// ranges Prune dropped.
	olderPruned = 1
	// maxOlder bounds the older ranges of one key: at 24 bytes a range,
	// that is 24 GiB for a single key.
	maxOlder = 1<<30 - 1
)

// view is a consistent snapshot of a live key's ranges: the older ranges,
// still in their array (see newOlder), then last. The array is read only
// when last does not answer, so that a lookup of a recent time touches the
// slot alone.
type view struct {
	older *rng
	last  rng
}

func newTable[K comparable](capacity int) *table[K] {
	return &table[K]{slots: make([]slot[K], capacity)}
}

// home returns the first slot of the probe sequence of a key whose hash is
// h. The table's size need not be a power of two: the hash's bits below the
// shard's, taken as a fraction, are scaled to it.
func (t *table[K]) home(h uint64) uint64 {
	i, _ := bits.Mul64(h<<shardBits, uint64(len(t.slots)))
	return i
}

// next returns the slot after i, wrapping around.
func (t *table[K]) next(i uint64) uint64 {
	if i++; i == uint64(len(t.slots)) {
		return 0
	}
	return i
}

// lookup returns key's slot, live or deleted, or nil.
func (t *table[K]) lookup(key K, h uint64) *slot[K] {
	for i := t.home(h); ; i = t.next(i) {
		sl := &t.slots[i]
		if sl.gi.Load() == giNeverUsed {
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
	for i := t.home(h); ; i = t.next(i) {
		sl := &t.slots[i]
		if sl.gi.Load() == giNeverUsed || sl.key == key {
			return sl
		}
	}
}

// full reports whether using one more slot would exceed a 3/4 load.
func (t *table[K]) full() bool { return (t.used+1)*4 > len(t.slots)*3 }

// rebuilt returns a new table holding t's live keys at a load of 11/20
// after one more insertion: a full table (3/4) grows by a third, so that the
// load stays between 0.55 and 0.75 (doubling would let it fall to 0.375, and
// a table of 48-byte slots then costs 128 bytes a key).
func (t *table[K]) rebuilt(h func(K) uint64) *table[K] {
	nt := newTable[K](max(8, (t.live+1)*20/11+1))
	for i := range t.slots {
		sl := &t.slots[i]
		if !sl.live() {
			continue
		}
		ns := nt.find(sl.key, h(sl.key))
		ns.key = sl.key
		ns.start.Store(sl.start.Load())
		ns.end.Store(sl.end.Load())
		ns.older.Store(sl.older.Load())
		ns.gi.Store(sl.gi.Load())
		nt.used++
		nt.live++
	}
	return nt
}

// live reports whether the slot holds a key.
func (sl *slot[K]) live() bool {
	gi := sl.gi.Load() & giMask
	return gi != giNeverUsed && gi != giDeleted
}

// read returns a consistent snapshot of the slot, or false if the key was
// deleted, resolving its group in gs. It never blocks a writer; it retries
// while one is changing the slot.
func (sl *slot[K]) read(gs *groupIndex) (view, bool) {
	for spins := 0; ; spins++ {
		v := sl.ver.Load()
		if v&1 == 0 {
			gi := sl.gi.Load() & giMask
			st, en := sl.start.Load(), sl.end.Load()
			p := sl.older.Load()
			var g *group
			if gi != giDeleted {
				g = gs.at(gi) // checked by the ver below: gi is live while the slot is unchanged
			}
			if sl.ver.Load() == v {
				if gi == giDeleted {
					return view{}, false
				}
				return view{older: p, last: rng{st, en, g}}, true
			}
		}
		if spins >= 16 {
			runtime.Gosched() // the writer may have been preempted mid-change
		}
	}
}

// newOlder returns the header of a new immutable array of the ranges
// older (not empty unless pruned): the array holds a header, whose start is
// the number of ranges and whose end the flags, followed by the ranges, so
// that reaching the first range needs no second pointer.
func newOlder(older []rng, pruned bool) *rng {
	if len(older) == 0 && !pruned {
		return nil
	}
	a := make([]rng, 1, len(older)+1)
	a[0].start = int64(len(older))
	if pruned {
		a[0].end = olderPruned
	}
	a = append(a, older...)
	return &a[0]
}

// olderRanges returns the ranges and the pruned flag of the array whose
// header is p.
func olderRanges(p *rng) ([]rng, bool) {
	if p == nil {
		return nil, false
	}
	if p.start == 0 {
		return nil, p.end&olderPruned != 0
	}
	return unsafe.Slice((*rng)(unsafe.Add(unsafe.Pointer(p), unsafe.Sizeof(rng{}))), p.start), p.end&olderPruned != 0
}

// ranges returns the slot's ranges, appended to buf, with its group
// resolved in gs. Writers only.
func (sl *slot[K]) ranges(gs *groupIndex, buf []rng) []rng {
	older, _ := olderRanges(sl.older.Load())
	buf = append(buf, older...)
	return append(buf, rng{sl.start.Load(), sl.end.Load(), gs.at(sl.gi.Load() & giMask)})
}

// pruned reports whether Prune dropped earlier ranges of the key. Writers
// only.
func (sl *slot[K]) pruned() bool {
	_, pruned := olderRanges(sl.older.Load())
	return pruned
}

// set replaces the slot's ranges with rs (not empty, at most maxOlder+1),
// keeping the older array when it is unchanged. Writers only.
func (sl *slot[K]) set(rs []rng, pruned bool) {
	p := sl.older.Load()
	old, wasPruned := olderRanges(p)
	older := rs[:len(rs)-1]
	if pruned != wasPruned || !slices.Equal(old, older) {
		p = newOlder(older, pruned)
	}
	last := rs[len(rs)-1]
	sl.ver.Add(1)
	sl.older.Store(p)
	sl.start.Store(last.start)
	sl.end.Store(last.end)
	sl.gi.Store(last.g.idx | sl.gi.Load()&slotReferenced)
	sl.ver.Add(1)
}

// remove deletes the slot's key, leaving a tombstone. Writers only.
func (sl *slot[K]) remove() {
	sl.ver.Add(1)
	sl.gi.Store(giDeleted)
	sl.older.Store(nil)
	sl.ver.Add(1)
}

// setReferenced sets or clears slotReferenced. Writers only.
func (sl *slot[K]) setReferenced(on bool) {
	gi := sl.gi.Load()
	if (gi&slotReferenced != 0) == on {
		return
	}
	sl.gi.Store(gi ^ slotReferenced)
}

func (sl *slot[K]) referenced() bool { return sl.gi.Load()&slotReferenced != 0 }
