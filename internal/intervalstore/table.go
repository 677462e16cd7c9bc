package intervalstore

import (
	"math/bits"
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
//     changing), except the trailing range's end when a claim extends
//     it, which is a single atomic store that is consistent on its own, and
//     the slotReferenced bit, which readers ignore.
//   - The arrays of older ranges are immutable once published.
type table[K comparable] struct {
	slots      []slot[K]
	used, live int // writer-only: slots ever used (live + tombstones), live keys
}

// slot is a key's state: its newest (trailing) range inline, with its group
// as an index (see groupIndex), and the older ranges in a separate immutable
// array (see olderArray). For Key128 keys it is 48 bytes and holds one
// pointer, to memory the garbage collector does not scan.
type slot[K comparable] struct {
	ver   atomic.Uint32 // sequence lock, odd while a writer changes the slot
	gi    atomic.Uint32 // trailing range's group index | slotReferenced, or giNeverUsed, giDeleted
	key   K
	start atomic.Int64 // trailing range
	end   atomic.Int64
	older atomic.Pointer[uint64] // the older ranges' first word (see olderArray), or nil
}

const (
	giNeverUsed = 0
	giDeleted   = 1
	// slotReferenced, a bit of gi, marks a key given a claim since it last
	// entered the eviction queue.
	slotReferenced = 1 << 31
	giMask         = slotReferenced - 1

	// olderPruned, in an olderArray's first word, marks a key whose earlier
	// ranges Prune dropped.
	olderPruned = 1
	// maxOlder bounds the older ranges of one key. A claim that changes a
	// key's ranges copies them all, under the writer lock: a key whose
	// owner flaps must not make each of its claims cost more and more, and
	// hold up every other writer meanwhile.
	maxOlder = 1<<8 - 1
)

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
func (t *table[K]) rebuilt(h *hasher[K]) *table[K] {
	nt := newTable[K](max(8, (t.live+1)*20/11+1))
	for i := range t.slots {
		sl := &t.slots[i]
		if !sl.live() {
			continue
		}
		ns := nt.find(sl.key, h.hash(sl.key))
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

// olderArray is a key's ranges before its trailing one, sorted, in one
// immutable allocation of words with no pointers: word 0 holds the number of
// ranges n << 1 | olderPruned, words 1 to 2n each range's start and end, and
// the words after them the ranges' group indexes, two to a word. Three
// ranges of a key thus take 48 bytes beside its slot, not 80 with pointers,
// and the garbage collector never scans them. A reader that resolves an
// index must check the slot's sequence number and table afterwards (see
// groupIndex).
type olderArray []uint64

// newOlder returns the first word of a new olderArray of the ranges older
// (not empty unless pruned), or nil.
func newOlder(older []rng, pruned bool) *uint64 {
	n := len(older)
	if n == 0 && !pruned {
		return nil
	}
	a := make(olderArray, 1+2*n+(n+1)/2)
	a[0] = uint64(n) << 1
	if pruned {
		a[0] |= olderPruned
	}
	for i, r := range older {
		a[1+2*i], a[2+2*i] = uint64(r.start), uint64(r.end)
		a[1+2*n+i/2] |= uint64(r.g.idx) << (32 * (i % 2))
	}
	return &a[0]
}

// loadOlder returns the olderArray whose first word is p (none if nil).
func loadOlder(p *uint64) olderArray {
	if p == nil {
		return nil
	}
	n := int(*p >> 1)
	return unsafe.Slice(p, 1+2*n+(n+1)/2)
}

func (a olderArray) len() int {
	if a == nil {
		return 0
	}
	return int(a[0] >> 1)
}

func (a olderArray) pruned() bool      { return a != nil && a[0]&olderPruned != 0 }
func (a olderArray) start(i int) int64 { return int64(a[1+2*i]) }
func (a olderArray) end(i int) int64   { return int64(a[2+2*i]) }
func (a olderArray) gi(i int) uint32 {
	return uint32(a[1+2*a.len()+i/2] >> (32 * (i % 2)))
}

// search returns the index of the first range with end >= t, or len().
func (a olderArray) search(t int64) int {
	lo, hi := 0, a.len()
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if a.end(m) < t {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// equal reports whether a holds exactly the ranges older and the flag
// pruned.
func (a olderArray) equal(older []rng, pruned bool) bool {
	if a.len() != len(older) || a.pruned() != pruned {
		return false
	}
	for i, r := range older {
		if a.start(i) != r.start || a.end(i) != r.end || a.gi(i) != r.g.idx {
			return false
		}
	}
	return true
}

// ranges returns the slot's ranges, appended to buf, with its group
// resolved in gs. Writers only.
func (sl *slot[K]) ranges(gs *groupIndex, buf []rng) []rng {
	older := loadOlder(sl.older.Load())
	for i := range older.len() {
		buf = append(buf, rng{older.start(i), older.end(i), gs.at(older.gi(i))})
	}
	return append(buf, rng{sl.start.Load(), sl.end.Load(), gs.at(sl.gi.Load() & giMask)})
}

// pruned reports whether Prune dropped earlier ranges of the key. Writers
// only.
func (sl *slot[K]) pruned() bool { return loadOlder(sl.older.Load()).pruned() }

// set replaces the slot's ranges with rs (not empty, at most maxOlder+1),
// keeping the older array when it is unchanged. Writers only.
func (sl *slot[K]) set(rs []rng, pruned bool) {
	p := sl.older.Load()
	older := rs[:len(rs)-1]
	if !loadOlder(p).equal(older, pruned) {
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
