package intervalstore

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flowattr/flowattr/internal/owners"
)

// This file holds the brute-force reference model: the package doc's
// declarative definition evaluated directly over the raw set of claims.

var base = time.Unix(1_700_000_000, 0)

// at returns base + n nanoseconds: the small time domain of the model tests.
func at(n int64) time.Time { return base.Add(time.Duration(n)) }

type claim struct {
	key   int
	owner owners.Owner
	s, e  int64 // offsets from base, ns
}

type comp struct {
	id   string
	s, e int64
	own  owners.Owner // attributes of the claim ending last (ties: greatest)
}

// components returns, per owner ID, the gap closure of the key's claims.
func components(claims []claim, key int, gap int64) []comp {
	byID := map[string][]claim{}
	for _, c := range claims {
		if c.key == key {
			byID[c.owner.ID] = append(byID[c.owner.ID], c)
		}
	}
	var out []comp
	for id, cs := range byID {
		slices.SortFunc(cs, func(a, b claim) int { return cmpInt(a.s, b.s) })
		var cur *comp
		for _, c := range cs {
			o := c.owner.Canonical()
			if cur != nil && c.s-cur.e-1 <= gap {
				if c.e > cur.e || (c.e == cur.e && cmpAttrs(o.Attributes, cur.own.Attributes) > 0) {
					cur.own = o
				}
				cur.e = max(cur.e, c.e)
				continue
			}
			out = append(out, comp{id: id, s: c.s, e: c.e, own: o})
			cur = &out[len(out)-1]
		}
	}
	return out
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// seg is a range in a comparable form: owners sorted by ID.
type seg struct {
	s, e   int64
	owners string
}

func ownersString(os []owners.Owner) string {
	var b strings.Builder
	for _, o := range os {
		fmt.Fprintf(&b, "%s%v;", o.ID, o.Attributes)
	}
	return b.String()
}

// modelSegments is the partition of covered time into maximal ranges with a
// constant set of covering owners.
func modelSegments(comps []comp) []seg {
	var pts []int64
	for _, c := range comps {
		pts = append(pts, c.s, c.e+1)
	}
	slices.Sort(pts)
	pts = slices.Compact(pts)
	var out []seg
	for i := 0; i+1 < len(pts); i++ {
		var os []owners.Owner
		for _, c := range comps {
			if c.s <= pts[i] && pts[i] <= c.e {
				os = append(os, c.own)
			}
		}
		if len(os) == 0 {
			continue
		}
		slices.SortFunc(os, func(a, b owners.Owner) int { return strings.Compare(a.ID, b.ID) })
		sg := seg{pts[i], pts[i+1] - 1, ownersString(os)}
		if n := len(out); n > 0 && out[n-1].owners == sg.owners && out[n-1].e+1 == sg.s {
			out[n-1].e = sg.e
			continue
		}
		out = append(out, sg)
	}
	return out
}

// modelLookup evaluates Lookup's definition at t (offset from base) with no
// pruning; cutoff is now-Retention as an offset.
func modelLookup(comps []comp, t, skew, cutoff int64) (Status, Reason, *owners.Owner) {
	var cover []comp
	for _, c := range comps {
		if c.s <= t && t <= c.e {
			cover = append(cover, c)
		}
	}
	switch len(cover) {
	case 0:
	case 1:
		o := cover[0]
		for _, c := range comps {
			if c.id != o.id && c.s <= t+skew && c.e >= t-skew {
				return Uncertain, ReasonNearOwnerChange, nil
			}
		}
		// No other owner in the window: the owner's components are apart by
		// more than MergeGap, so the window is covered only if o's covers it.
		if o.s <= t-skew && t+skew <= o.e {
			return Attributed, ReasonNone, &o.own
		}
		if t < cutoff {
			return Unattributed, ReasonExpired, nil
		}
		return Unattributed, ReasonNearUnclaimedEdge, nil
	default:
		return Conflict, ReasonOverlappingClaims, nil
	}
	if t < cutoff {
		return Unattributed, ReasonExpired, nil
	}
	if len(comps) == 0 {
		return Unattributed, ReasonNoClaim, nil
	}
	first, last := int64(math.MaxInt64), int64(math.MinInt64)
	for _, c := range comps {
		first, last = min(first, c.s), max(last, c.e)
	}
	switch {
	case t > last:
		return Unattributed, ReasonAfterLastClaim, nil
	case t < first:
		return Unattributed, ReasonBeforeFirstClaim, nil
	}
	return Unattributed, ReasonGap, nil
}

// storedRanges returns a key's ranges.
func storedRanges[K comparable](s *Store[K], key K) []rng {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	h := s.hash(key)
	sl := s.tableFor(h).lookup(key, h)
	if sl == nil || !sl.live() {
		return nil
	}
	return sl.ranges(&s.in.groups, nil)
}

// storeSegments dumps a key's stored ranges in the model's form.
func storeSegments[K comparable](s *Store[K], key K) []seg {
	var out []seg
	for _, r := range storedRanges(s, key) {
		var os []owners.Owner
		if r.g.owner != nil {
			os = []owners.Owner{*r.g.owner}
		}
		for _, m := range r.g.members {
			os = append(os, *m.owner)
		}
		out = append(out, seg{r.s(), r.e(), ownersString(os)})
	}
	return out
}

func (r rng) s() int64 { return r.start - base.UnixNano() }
func (r rng) e() int64 { return r.end - base.UnixNano() }

// checkInvariants verifies the structural invariants of every key and the
// size counters.
func checkInvariants[K comparable](t testing.TB, s *Store[K]) {
	t.Helper()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	keys, ranges, confl := 0, 0, 0
	for i := range s.shards {
		tab := s.shards[i].Load()
		used, live := 0, 0
		for x := range tab.slots {
			sl := &tab.slots[x]
			if sl.gi.Load() != giNeverUsed {
				used++
			}
			if !sl.live() {
				continue
			}
			live++
			k := sl.key
			if got := tab.lookup(k, s.hash(k)); got != sl {
				t.Fatalf("key %v: not found where stored", k)
			}
			rs := sl.ranges(&s.in.groups, nil)
			keys++
			ranges += len(rs)
			for j, r := range rs {
				if r.start > r.end {
					t.Fatalf("key %v: empty range %d: %+v", k, j, r)
				}
				if j > 0 && rs[j-1].end >= r.start {
					t.Fatalf("key %v: ranges %d and %d overlap or are unsorted", k, j-1, j)
				}
				if j > 0 && rs[j-1].end+1 == r.start && rs[j-1].g == r.g {
					t.Fatalf("key %v: ranges %d and %d should be one", k, j-1, j)
				}
				if s.in.groups.owner(r.g.idx) != r.g.owner {
					t.Fatalf("key %v: range %d: the group index names owner %v, the group %v", k, j, s.in.groups.owner(r.g.idx), r.g.owner)
				}
				if r.g.owner == nil {
					confl++
					if len(r.g.members) < 2 {
						t.Fatalf("key %v: conflict range with %d owners", k, len(r.g.members))
					}
					for x := 1; x < len(r.g.members); x++ {
						if r.g.members[x-1].owner.ID >= r.g.members[x].owner.ID {
							t.Fatalf("key %v: conflict owners unsorted or repeated", k)
						}
					}
				}
			}
		}
		if used != tab.used || live != tab.live || used*4 > len(tab.slots)*3 {
			t.Fatalf("shard %d: used %d/%d live %d/%d of %d slots", i, tab.used, used, tab.live, live, len(tab.slots))
		}
	}
	if keys != s.keys || ranges != s.ranges || confl != s.nConfl {
		t.Fatalf("counters: keys %d/%d ranges %d/%d conflicts %d/%d", s.keys, keys, s.ranges, ranges, s.nConfl, confl)
	}
	if s.evict.len() != keys {
		t.Fatalf("eviction queue has %d entries for %d keys", s.evict.len(), keys)
	}
}

// checkAgainstModel compares every key's ranges and every lookup in
// [lo, hi] with the model.
func checkAgainstModel(t testing.TB, s *Store[int], claims []claim, nKeys int, lo, hi, cutoff int64) {
	t.Helper()
	for k := range nKeys {
		comps := components(claims, k, s.gap)
		if got, want := storeSegments(s, k), modelSegments(comps); !slices.Equal(got, want) {
			t.Fatalf("key %d ranges:\n got  %v\n want %v\nclaims %v", k, got, want, claims)
		}
		for x := lo; x <= hi; x++ {
			got := s.Lookup(k, at(x))
			st, re, o := modelLookup(comps, x, s.skew, cutoff)
			if got.Status != st || got.Reason != re || (o == nil) != (got.Owner == nil) ||
				(o != nil && !o.Equal(*got.Owner)) {
				t.Fatalf("key %d t=%d: got %v/%v/%v want %v/%v/%v\nclaims %v", k, x, got.Status, got.Reason, got.Owner, st, re, o, claims)
			}
			if got.Status == Conflict && got.Owner != nil {
				t.Fatalf("conflict returned an owner")
			}
		}
	}
}
