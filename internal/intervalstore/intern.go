package intervalstore

import (
	"encoding/binary"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"unique"

	"github.com/flowattr/flowattr/internal/owners"
)

// group is what a range points at: either one interned owner (owner != nil)
// or an interned conflict set (owner == nil, members sorted by owner ID, one
// per ID, at least two). Groups are immutable once interned, so pointer
// equality is set equality.
type group struct {
	owner   *owners.Owner
	members []*group
	num     uint64 // interning number of a single owner; names it in set keys
	key     string // key of a conflict set in interner.sets
	mark    uint64 // Prune epoch that last saw the group referenced
	idx     uint32 // the group's index in groupIndex, which slots store
}

// member returns g's owner with the given ID, or nil.
func (g *group) member(id string) *group {
	if g.owner != nil {
		if g.owner.ID == id {
			return g
		}
		return nil
	}
	for _, m := range g.members {
		if m.owner.ID == id {
			return m
		}
	}
	return nil
}

// hasOther reports whether g holds an owner whose ID is not id.
func (g *group) hasOther(id string) bool {
	return g.owner == nil || g.owner.ID != id
}

// groupIndex numbers the interned groups so that a slot can name its
// trailing range's group in 32 bits, beside its sequence number, instead of
// a pointer. Readers resolve an index without a lock; writers (under
// Store.wmu) add groups and free the indexes of swept ones for reuse. A
// reader that resolves an index read from a slot must check afterwards that
// the slot's sequence number is unchanged and that the slot's table is
// still its shard's: an index is only freed after every slot of the shards'
// current tables that named it changed, and slots of a replaced table never
// change again.
type groupIndex struct {
	// refs is indexed by group index. When full it is replaced by a copy
	// twice as long, and writers change only the newest copy: a reader
	// loads refs after the index, which a writer stores in a slot after
	// publishing its entry, and an older copy differs from the newest only
	// at indexes freed since, which its checks reject.
	refs atomic.Pointer[[]groupRef]
	next uint32 // never-used indexes start here
	free []uint32
}

// groupRef is one index's entry. owner repeats group.owner so that the
// common lookup, which needs only the owner, reads one word of a flat
// array instead of following the group pointer.
type groupRef struct {
	g     atomic.Pointer[group]
	owner atomic.Pointer[owners.Owner]
}

const (
	// firstGroup is the first index of a group: 0 and 1 are a slot's
	// "never used" and "deleted" marks (see slot.gi), whose entries stay
	// empty.
	firstGroup = 2
	// maxGroups keeps indexes clear of slotReferenced. Reaching it would take
	// about 200 GiB of interned groups, far beyond any MaxKeys.
	maxGroups = 1 << 31
	// minGroupRefs is the length of the first refs.
	minGroupRefs = 1 << 10
)

// at returns the group with index i. i must be one read from a live slot.
func (x *groupIndex) at(i uint32) *group { return (*x.refs.Load())[i].g.Load() }

// owner returns the owner of the group with index i, nil for a conflict
// set or the marks giNeverUsed and giDeleted. i must be one read from a
// slot.
func (x *groupIndex) owner(i uint32) *owners.Owner { return (*x.refs.Load())[i].owner.Load() }

// add gives g an index.
func (x *groupIndex) add(g *group) {
	if n := len(x.free); n > 0 {
		g.idx = x.free[n-1]
		x.free = x.free[:n-1]
	} else {
		if x.next < firstGroup {
			x.next = firstGroup
		}
		if x.next >= maxGroups {
			panic("intervalstore: more than 2^31 interned groups")
		}
		g.idx = x.next
		x.next++
	}
	var refs []groupRef
	if p := x.refs.Load(); p != nil {
		refs = *p
	}
	if int(g.idx) >= len(refs) {
		grown := make([]groupRef, max(minGroupRefs, 2*len(refs)))
		for i := range refs {
			grown[i].g.Store(refs[i].g.Load())
			grown[i].owner.Store(refs[i].owner.Load())
		}
		refs = grown
		x.refs.Store(&refs)
	}
	refs[g.idx].g.Store(g)
	refs[g.idx].owner.Store(g.owner)
}

// freedGroup is what a freed index resolves to until it is reused: no owner
// and no members, which a reader takes for a conflict until its checks
// reject what it read.
var freedGroup = &group{}

// remove frees g's index, and lets g and its owner go: an index left naming
// g would keep them in memory until it is reused. Readers may still resolve
// the index (to g, or freedGroup, or a group that reuses it); the checks of
// the slot's sequence number and table reject what they read then.
func (x *groupIndex) remove(g *group) {
	r := &(*x.refs.Load())[g.idx]
	r.g.Store(freedGroup)
	r.owner.Store(nil)
	x.free = append(x.free, g.idx)
}

// interner deduplicates owners and owner sets. It is guarded by Store.wmu,
// except that readers resolve indexes through groups.
type interner struct {
	owners  map[string][]*group // by owner ID; one entry per distinct attribute set
	sets    map[string]*group
	groups  groupIndex
	nOwners int
	// The largest sizes of owners and sets since they were last moved to
	// smaller maps (see sweep).
	peakOwners, peakSets int
	nextNum              uint64
	buf                  []byte
	mbuf                 []*group
}

func (in *interner) init() {
	in.owners = make(map[string][]*group)
	in.sets = make(map[string]*group)
}

// owner returns the interned single-owner group for o, canonicalising it.
func (in *interner) owner(o owners.Owner) *group {
	if !isCanonical(o.Attributes) {
		o = o.Canonical()
	}
	list := in.owners[o.ID]
	for _, g := range list {
		if slices.Equal(g.owner.Attributes, o.Attributes) {
			return g
		}
	}
	in.nextNum++
	attrs := slices.Clip(slices.Clone(o.Attributes))
	for i := range attrs {
		// Owners share one copy of each attribute name, so that reading
		// many owners' names touches a few cache lines, and comparing
		// two of them finds equal pointers.
		attrs[i].Name = unique.Make(attrs[i].Name).Value()
	}
	g := &group{owner: &owners.Owner{ID: o.ID, Attributes: attrs}, num: in.nextNum}
	in.groups.add(g)
	in.owners[o.ID] = append(list, g)
	in.nOwners++
	return g
}

// with returns the group holding g's owners plus o, where o replaces an owner
// of g with the same ID.
func (in *interner) with(g, o *group) *group {
	id := o.owner.ID
	if g.owner != nil {
		switch c := strings.Compare(g.owner.ID, id); {
		case c == 0:
			return o
		case c < 0:
			return in.set(append(in.mbuf[:0], g, o))
		default:
			return in.set(append(in.mbuf[:0], o, g))
		}
	}
	ms := in.mbuf[:0]
	added := false
	for _, m := range g.members {
		c := strings.Compare(m.owner.ID, id)
		switch {
		case c == 0:
			m, added = o, true
		case c > 0 && !added:
			ms, added = append(ms, o), true
		}
		ms = append(ms, m)
	}
	if !added {
		ms = append(ms, o)
	}
	return in.set(ms)
}

// set interns the conflict set of members (sorted by ID, IDs unique).
func (in *interner) set(members []*group) *group {
	in.mbuf = members[:0]
	b := in.buf[:0]
	for _, m := range members {
		b = binary.LittleEndian.AppendUint64(b, m.num)
	}
	in.buf = b
	if g, ok := in.sets[string(b)]; ok {
		return g
	}
	g := &group{members: slices.Clone(members), key: string(b)}
	in.groups.add(g)
	in.sets[g.key] = g
	return g
}

// markLive records that a range referencing g was live in epoch (of Prune
// or of a collection between applies).
func markLive(g *group, epoch uint64) {
	g.mark = epoch
	for _, m := range g.members {
		m.mark = epoch
	}
}

// groupCount returns the number of interned owners and owner sets.
func (in *interner) groupCount() int { return in.nOwners + len(in.sets) }

// sweep forgets owners and sets not marked in epoch, and moves the maps to
// smaller ones when they have emptied to a quarter of their peak: a Go map
// never gives back its buckets.
func (in *interner) sweep(epoch uint64) {
	for k, g := range in.sets {
		if g.mark != epoch {
			delete(in.sets, k)
			in.groups.remove(g)
		}
	}
	for id, list := range in.owners {
		live := slices.DeleteFunc(list, func(g *group) bool {
			if g.mark != epoch {
				in.groups.remove(g)
				return true
			}
			return false
		})
		in.nOwners -= len(list) - len(live)
		clear(list[len(live):])
		if len(live) == 0 {
			delete(in.owners, id)
		} else {
			in.owners[id] = live
		}
	}
	in.peakOwners = max(in.peakOwners, len(in.owners))
	if len(in.owners) < in.peakOwners/4 {
		in.owners, in.peakOwners = maps.Clone(in.owners), len(in.owners)
	}
	in.peakSets = max(in.peakSets, len(in.sets))
	if len(in.sets) < in.peakSets/4 {
		in.sets, in.peakSets = maps.Clone(in.sets), len(in.sets)
	}
}

func isCanonical(attrs []owners.Attribute) bool {
	for i := 1; i < len(attrs); i++ {
		if attrs[i-1].Name >= attrs[i].Name {
			return false
		}
	}
	return true
}

// cmpAttrs orders attribute lists lexicographically by (Name, Value).
func cmpAttrs(a, b []owners.Attribute) int {
	return slices.CompareFunc(a, b, func(x, y owners.Attribute) int {
		if c := strings.Compare(x.Name, y.Name); c != 0 {
			return c
		}
		return strings.Compare(x.Value, y.Value)
	})
}
