package intervalstore

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowattr/flowattr/internal/owners"
)

func sec(n int64) time.Time { return base.Add(time.Duration(n) * time.Second) }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

type step struct {
	key    string
	owner  string
	s, e   int64 // seconds from base
	result ApplyResult
}

type probe struct {
	key    string
	t      int64 // seconds from base
	status Status
	reason Reason
	owner  string
}

var (
	ownA = owners.Owner{ID: "a", Attributes: []owners.Attribute{{Name: "service.name", Value: "alpha"}}}
	ownB = owners.Owner{ID: "b"}
	ownC = owners.Owner{ID: "c"}
)

func ownerByID(id string) owners.Owner {
	return map[string]owners.Owner{"a": ownA, "b": ownB, "c": ownC}[id]
}

func TestRules(t *testing.T) {
	tests := []struct {
		name         string
		gap, skew    time.Duration
		steps        []step
		probes       []probe
		ranges       int
		conflictRngs int
		conflicts    uint64
	}{
		{
			name:   "merge overlapping claims",
			steps:  []step{{"k", "a", 0, 10, ApplyResult{NewKey: true}}, {"k", "a", 5, 20, ApplyResult{}}},
			probes: []probe{{"k", 15, Attributed, ReasonNone, "a"}},
			ranges: 1,
		},
		{
			name:   "touching claims join with no gap allowed",
			steps:  []step{{"k", "a", 0, 10, ApplyResult{NewKey: true}}, {"k", "a", 10, 20, ApplyResult{}}},
			ranges: 1,
		},
		{
			name:   "gap within MergeGap is closed",
			gap:    5 * time.Second,
			steps:  []step{{"k", "a", 0, 10, ApplyResult{NewKey: true}}, {"k", "a", 15, 20, ApplyResult{}}},
			probes: []probe{{"k", 12, Attributed, ReasonNone, "a"}},
			ranges: 1,
		},
		{
			name:  "gap beyond MergeGap stays a gap",
			gap:   5 * time.Second,
			steps: []step{{"k", "a", 0, 10, ApplyResult{NewKey: true}}, {"k", "a", 16, 20, ApplyResult{}}},
			probes: []probe{
				{"k", 13, Unattributed, ReasonGap, ""},
				{"k", 17, Attributed, ReasonNone, "a"},
			},
			ranges: 2,
		},
		{
			name: "gap closure is transitive",
			gap:  5 * time.Second,
			steps: []step{
				{"k", "a", 0, 10, ApplyResult{NewKey: true}},
				{"k", "a", 20, 30, ApplyResult{}},
				{"k", "a", 14, 16, ApplyResult{}},
			},
			probes: []probe{{"k", 12, Attributed, ReasonNone, "a"}, {"k", 18, Attributed, ReasonNone, "a"}},
			ranges: 1,
		},
		{
			name: "overlap of two owners creates a conflict range",
			steps: []step{
				{"k", "a", 0, 10, ApplyResult{NewKey: true}},
				{"k", "b", 5, 15, ApplyResult{Conflict: true}},
			},
			probes: []probe{
				{"k", 2, Attributed, ReasonNone, "a"},
				{"k", 5, Conflict, ReasonOverlappingClaims, ""},
				{"k", 10, Conflict, ReasonOverlappingClaims, ""},
				{"k", 12, Attributed, ReasonNone, "b"},
			},
			ranges: 3, conflictRngs: 1, conflicts: 1,
		},
		{
			name: "extending into a conflict widens it; re-applying does not",
			steps: []step{
				{"k", "a", 0, 10, ApplyResult{NewKey: true}},
				{"k", "b", 5, 15, ApplyResult{Conflict: true}},
				{"k", "a", 8, 12, ApplyResult{Conflict: true}},
				{"k", "a", 8, 12, ApplyResult{}},
				{"k", "b", 5, 15, ApplyResult{}},
			},
			probes: []probe{
				{"k", 12, Conflict, ReasonOverlappingClaims, ""},
				{"k", 13, Attributed, ReasonNone, "b"},
			},
			ranges: 3, conflictRngs: 1, conflicts: 2,
		},
		{
			name: "a third owner joins a conflict and gets its own set",
			steps: []step{
				{"k", "a", 0, 10, ApplyResult{NewKey: true}},
				{"k", "b", 0, 10, ApplyResult{Conflict: true}},
				{"k", "c", 5, 5, ApplyResult{Conflict: true}},
			},
			probes: []probe{{"k", 5, Conflict, ReasonOverlappingClaims, ""}},
			ranges: 3, conflictRngs: 3, conflicts: 2,
		},
		{
			name: "A-B-A within MergeGap is a conflict, never A",
			gap:  10 * time.Second,
			steps: []step{
				{"k", "a", 0, 10, ApplyResult{NewKey: true}},
				{"k", "b", 12, 14, ApplyResult{}},
				{"k", "a", 16, 20, ApplyResult{Conflict: true}},
			},
			probes: []probe{{"k", 13, Conflict, ReasonOverlappingClaims, ""}, {"k", 11, Attributed, ReasonNone, "a"}},
			ranges: 3, conflictRngs: 1, conflicts: 1,
		},
		{
			name: "another owner within ClockSkew makes it uncertain",
			skew: 3 * time.Second,
			steps: []step{
				{"k", "a", 0, 10, ApplyResult{NewKey: true}},
				{"k", "b", 13, 20, ApplyResult{}},
			},
			probes: []probe{
				{"k", 2, Unattributed, ReasonNearUnclaimedEdge, ""},
				{"k", 3, Attributed, ReasonNone, "a"},
				{"k", 6, Attributed, ReasonNone, "a"},
				{"k", 7, Attributed, ReasonNone, "a"},
				{"k", 10, Uncertain, ReasonNearOwnerChange, ""},
				{"k", 12, Unattributed, ReasonGap, ""},
				{"k", 13, Uncertain, ReasonNearOwnerChange, ""},
				{"k", 14, Unattributed, ReasonNearUnclaimedEdge, ""}, // 11 and 12 are unclaimed
				{"k", 16, Attributed, ReasonNone, "b"},
				{"k", 18, Unattributed, ReasonNearUnclaimedEdge, ""},
				{"k", 20, Unattributed, ReasonNearUnclaimedEdge, ""},
			},
			ranges: 2,
		},
		{
			name: "the owner's own ranges beyond MergeGap leave an unclaimed edge",
			skew: 3 * time.Second,
			steps: []step{
				{"k", "a", 0, 10, ApplyResult{NewKey: true}},
				{"k", "a", 12, 20, ApplyResult{}},
			},
			probes: []probe{
				{"k", 7, Attributed, ReasonNone, "a"},
				{"k", 8, Unattributed, ReasonNearUnclaimedEdge, ""},
				{"k", 10, Unattributed, ReasonNearUnclaimedEdge, ""},
				{"k", 12, Unattributed, ReasonNearUnclaimedEdge, ""},
				{"k", 15, Attributed, ReasonNone, "a"},
			},
			ranges: 2,
		},
		{
			name: "a window covered through MergeGap closure is attributed",
			gap:  2 * time.Second,
			skew: 3 * time.Second,
			steps: []step{
				{"k", "a", 0, 10, ApplyResult{NewKey: true}},
				{"k", "a", 12, 20, ApplyResult{}},
			},
			probes: []probe{{"k", 10, Attributed, ReasonNone, "a"}, {"k", 12, Attributed, ReasonNone, "a"}},
			ranges: 1,
		},
		{
			name: "the edge waits for a later claim: the previous owner's makes it uncertain",
			skew: 2 * time.Second,
			steps: []step{
				{"k", "b", 10, 20, ApplyResult{NewKey: true}},
				{"k", "a", 0, 9, ApplyResult{}},
			},
			probes: []probe{{"k", 11, Uncertain, ReasonNearOwnerChange, ""}, {"k", 12, Attributed, ReasonNone, "b"}},
			ranges: 2,
		},
		{
			name: "the edge waits for a later claim: the next claim of the same owner attributes it",
			skew: 2 * time.Second,
			steps: []step{
				{"k", "b", 10, 20, ApplyResult{NewKey: true}},
				{"k", "b", 20, 30, ApplyResult{}},
			},
			probes: []probe{{"k", 19, Attributed, ReasonNone, "b"}, {"k", 29, Unattributed, ReasonNearUnclaimedEdge, ""}},
			ranges: 1,
		},
		{
			name: "conflict range within ClockSkew makes it uncertain",
			skew: 2 * time.Second,
			steps: []step{
				{"k", "a", 0, 10, ApplyResult{NewKey: true}},
				{"k", "b", 8, 10, ApplyResult{Conflict: true}},
			},
			probes: []probe{{"k", 6, Uncertain, ReasonNearOwnerChange, ""}, {"k", 5, Attributed, ReasonNone, "a"}, {"k", 1, Unattributed, ReasonNearUnclaimedEdge, ""}},
			ranges: 2, conflictRngs: 1, conflicts: 1,
		},
		{
			name:  "reasons for unattributed lookups",
			steps: []step{{"k", "a", 10, 20, ApplyResult{NewKey: true}}, {"k", "a", 30, 40, ApplyResult{}}},
			probes: []probe{
				{"unknown", 15, Unattributed, ReasonNoClaim, ""},
				{"k", 5, Unattributed, ReasonBeforeFirstClaim, ""},
				{"k", 25, Unattributed, ReasonGap, ""},
				{"k", 41, Unattributed, ReasonAfterLastClaim, ""},
				{"k", -4000, Unattributed, ReasonExpired, ""},
				{"unknown", -4000, Unattributed, ReasonExpired, ""},
			},
			ranges: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New[string](Config{MergeGap: tc.gap, ClockSkew: tc.skew, Retention: time.Hour, MaxKeys: 10, Now: fixedClock(sec(100))})
			if err != nil {
				t.Fatal(err)
			}
			for i, st := range tc.steps {
				res, err := s.Apply(st.key, ownerByID(st.owner), sec(st.s), sec(st.e))
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if res != st.result {
					t.Errorf("step %d: got %+v want %+v", i, res, st.result)
				}
				checkInvariants(t, s)
			}
			for _, p := range tc.probes {
				got := s.Lookup(p.key, sec(p.t))
				if got.Status != p.status || got.Reason != p.reason {
					t.Errorf("Lookup(%s, %d) = %v/%q, want %v/%q", p.key, p.t, got.Status, got.Reason, p.status, p.reason)
				}
				if (got.Owner != nil) != (p.owner != "") || (got.Owner != nil && got.Owner.ID != p.owner) {
					t.Errorf("Lookup(%s, %d) owner = %v, want %q", p.key, p.t, got.Owner, p.owner)
				}
			}
			st := s.Stats()
			if st.Ranges != tc.ranges || st.ConflictRanges != tc.conflictRngs || st.Conflicts != tc.conflicts {
				t.Errorf("stats %+v, want ranges %d conflict ranges %d conflicts %d", st, tc.ranges, tc.conflictRngs, tc.conflicts)
			}
		})
	}
}

func TestAttributesOfLatestClaimWin(t *testing.T) {
	s, _ := New[string](Config{Retention: time.Hour, MaxKeys: 10, Now: fixedClock(sec(100))})
	v1 := owners.Owner{ID: "a", Attributes: []owners.Attribute{{Name: "version", Value: "1"}, {Name: "app", Value: "x"}}}
	v2 := owners.Owner{ID: "a", Attributes: []owners.Attribute{{Name: "app", Value: "x"}, {Name: "version", Value: "2"}}}
	for _, c := range []struct {
		o    owners.Owner
		s, e int64
	}{{v2, 10, 20}, {v1, 0, 12}, {v1, 5, 6}} {
		res, err := s.Apply("k", c.o, sec(c.s), sec(c.e))
		if err != nil || res.Conflict {
			t.Fatalf("apply: %+v %v", res, err)
		}
	}
	got := s.Lookup("k", sec(1))
	if got.Status != Attributed || !got.Owner.Equal(v2.Canonical()) {
		t.Fatalf("got %+v, want the attributes of the claim ending last", got)
	}
	if st := s.Stats(); st.Ranges != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOwnersAreCanonicalAndInterned(t *testing.T) {
	s, _ := New[int](Config{Retention: time.Hour, MaxKeys: 100, Now: fixedClock(sec(100))})
	unsorted := owners.Owner{ID: "w", Attributes: []owners.Attribute{{Name: "z", Value: "1"}, {Name: "a", Value: "0"}, {Name: "a", Value: "2"}}}
	for k := range 10 {
		if _, err := s.Apply(k, unsorted, sec(0), sec(1)); err != nil {
			t.Fatal(err)
		}
	}
	unsorted.Attributes[0].Value = "changed by caller"
	first := s.Lookup(0, sec(0)).Owner
	want := owners.Owner{ID: "w", Attributes: []owners.Attribute{{Name: "a", Value: "2"}, {Name: "z", Value: "1"}}}
	if first == nil || !first.Equal(want) {
		t.Fatalf("owner %+v, want %+v", first, want)
	}
	for k := 1; k < 10; k++ {
		if o := s.Lookup(k, sec(0)).Owner; o != first {
			t.Fatalf("key %d: owner not interned (%p vs %p)", k, o, first)
		}
	}
	if st := s.Stats(); st.Owners != 1 {
		t.Fatalf("owners = %d, want 1", st.Owners)
	}
}

func TestRetentionAndPrune(t *testing.T) {
	clk := &clock{t: sec(0)}
	s, _ := New[string](Config{Retention: 100 * time.Second, MaxKeys: 10, Now: clk.Now})
	apply := func(key string, o owners.Owner, a, b int64) {
		t.Helper()
		if _, err := s.Apply(key, o, sec(a), sec(b)); err != nil {
			t.Fatal(err)
		}
	}
	apply("old", ownA, 0, 10)
	apply("k", ownB, 0, 10)
	apply("k", ownC, 150, 160)
	apply("k", ownA, 140, 145)

	clk.Set(sec(200)) // cutoff 100
	if _, err := s.Apply("k", ownB, sec(50), sec(99)); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired claim: err = %v", err)
	}
	// Not yet pruned: covered history is still answered.
	if got := s.Lookup("k", sec(5)); got.Status != Attributed {
		t.Fatalf("before prune: %+v", got)
	}
	if got := s.Lookup("k", sec(20)); got.Reason != ReasonExpired {
		t.Fatalf("uncovered old time: %+v", got)
	}
	ranges, keys := s.Prune()
	if ranges != 2 || keys != 1 {
		t.Fatalf("Prune() = %d, %d; want 2, 1", ranges, keys)
	}
	checkInvariants(t, s)
	for _, p := range []probe{
		{"k", 5, Unattributed, ReasonExpired, ""},
		{"old", 5, Unattributed, ReasonExpired, ""},
		{"old", 150, Unattributed, ReasonNoClaim, ""},
		{"k", 120, Unattributed, ReasonGap, ""}, // before the first retained range, after pruned ones
		{"k", 146, Unattributed, ReasonGap, ""},
		{"k", 155, Attributed, ReasonNone, "c"},
	} {
		got := s.Lookup(p.key, sec(p.t))
		if got.Status != p.status || got.Reason != p.reason {
			t.Errorf("Lookup(%s, %d) = %v/%v, want %v/%v", p.key, p.t, got.Status, got.Reason, p.status, p.reason)
		}
	}
	st := s.Stats()
	want := Stats{Keys: 1, Ranges: 2, Owners: 2, PrunedRanges: 2}
	if st != want {
		t.Fatalf("stats %+v, want %+v (owner b swept)", st, want)
	}
}

func TestEvictionOrder(t *testing.T) {
	s, _ := New[int](Config{Retention: time.Hour, MaxKeys: 3, Now: fixedClock(sec(100))})
	apply := func(k int) ApplyResult {
		t.Helper()
		res, err := s.Apply(k, ownA, sec(int64(k)), sec(int64(k)+1))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	apply(1)
	apply(2)
	apply(3)
	apply(1) // key 1 is now the most recent
	if res := apply(4); res.Evicted != 1 || !res.NewKey {
		t.Fatalf("apply 4: %+v", res)
	}
	apply(3)
	apply(5)
	for k, want := range map[int]bool{1: false, 2: false, 3: true, 4: true, 5: true} {
		if got := s.Lookup(k, sec(int64(k))).Status == Attributed; got != want {
			t.Errorf("key %d present = %v, want %v", k, got, want)
		}
	}
	checkInvariants(t, s)
	if st := s.Stats(); st.Evictions != 2 || st.Keys != 3 {
		t.Fatalf("stats %+v", st)
	}
	// Eviction still follows claim order after Prune rebuilt the heap.
	s.Prune()
	apply(6)
	if s.Lookup(4, sec(4)).Status == Attributed {
		t.Fatal("key 4 should have been evicted after prune")
	}
}

// TestEvictionSecondChance pins down how eviction approximates LRU (see the
// package doc): idle keys go before claimed ones, and a claimed key whose
// second chance was spent goes before one claimed earlier whose was not.
func TestEvictionSecondChance(t *testing.T) {
	s, _ := New[string](Config{Retention: time.Hour, MaxKeys: 3, Now: fixedClock(sec(100))})
	apply := func(k string) ApplyResult {
		t.Helper()
		res, err := s.Apply(k, ownA, sec(1), sec(2))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	present := func(k string) bool { return s.Lookup(k, sec(1)).Status == Attributed }
	apply("A")
	apply("B")
	apply("C")
	apply("C")
	apply("A")
	if res := apply("D"); res.Evicted != 1 || present("B") {
		t.Fatalf("first eviction: %+v, B present %v; want B, the only idle key, evicted", res, present("B"))
	}
	if res := apply("E"); res.Evicted != 1 || present("A") || !present("C") {
		t.Fatalf("second eviction: %+v, A present %v, C present %v; want A evicted (exact LRU would take C)", res, present("A"), present("C"))
	}
	checkInvariants(t, s)
}

// TestTableGrowthAndTombstones grows the tables well past their first size,
// deletes most keys (leaving tombstones that Prune clears), revives some and
// checks every key's answer and the store's invariants along the way.
func TestTableGrowthAndTombstones(t *testing.T) {
	clk := &clock{t: sec(0)}
	const n = 20000
	s, _ := New[int](Config{Retention: 100 * time.Second, MaxKeys: n, Now: clk.Now})
	for k := range n {
		if _, err := s.Apply(k, testOwners[k%len(testOwners)], sec(int64(k%50)), sec(int64(k%50))); err != nil {
			t.Fatal(err)
		}
	}
	checkInvariants(t, s)
	// Keys k%50 >= 40 get a claim that survives the prune below.
	for k := range n {
		if k%50 >= 40 {
			if _, err := s.Apply(k, testOwners[k%len(testOwners)], sec(150), sec(160)); err != nil {
				t.Fatal(err)
			}
		}
	}
	clk.Set(sec(200)) // cutoff 100
	ranges, keys := s.Prune()
	if keys != n*4/5 || ranges != n {
		t.Fatalf("Prune() = %d ranges, %d keys; want %d, %d", ranges, keys, n, n*4/5)
	}
	checkInvariants(t, s)
	for k := range n {
		if k%2 == 0 && k%50 < 40 {
			if res, err := s.Apply(k, ownB, sec(190), sec(195)); err != nil || !res.NewKey {
				t.Fatalf("revive %d: %+v %v", k, res, err)
			}
		}
	}
	checkInvariants(t, s)
	for k := range n {
		got := s.Lookup(k, sec(192))
		switch {
		case k%50 >= 40:
			if got = s.Lookup(k, sec(120)); got.Reason != ReasonGap {
				t.Fatalf("key %d: %+v, want a gap after its pruned range", k, got)
			}
		case k%2 == 0:
			if got.Status != Attributed || got.Owner.ID != "b" {
				t.Fatalf("key %d: %+v, want b", k, got)
			}
		default:
			if got.Reason != ReasonNoClaim {
				t.Fatalf("key %d: %+v, want no claim", k, got)
			}
		}
	}
}

// TestKeyRangeLimit lowers the per-key range limit to check that the oldest
// ranges beyond it are dropped as if pruned, and counted.
func TestKeyRangeLimit(t *testing.T) {
	s, _ := New[string](Config{Retention: time.Hour, MaxKeys: 1, Now: fixedClock(sec(100))})
	s.maxRanges = 3
	for i := range int64(5) {
		if _, err := s.Apply("k", ownerByID([]string{"a", "b"}[i%2]), sec(10*i), sec(10*i+5)); err != nil {
			t.Fatal(err)
		}
	}
	checkInvariants(t, s)
	if st := s.Stats(); st.Ranges != 3 || st.PrunedRanges != 2 {
		t.Fatalf("stats %+v, want 3 ranges, 2 pruned", st)
	}
	for _, p := range []probe{
		{"k", 2, Unattributed, ReasonGap, ""},
		{"k", 12, Unattributed, ReasonGap, ""},
		{"k", 22, Attributed, ReasonNone, "a"},
		{"k", 42, Attributed, ReasonNone, "a"},
	} {
		if got := s.Lookup(p.key, sec(p.t)); got.Status != p.status || got.Reason != p.reason {
			t.Errorf("Lookup(%s, %d) = %v/%v, want %v/%v", p.key, p.t, got.Status, got.Reason, p.status, p.reason)
		}
	}
}

// TestKeyRangeLimitDefault checks the limit as shipped: a key whose owner
// changes at every claim keeps its newest 256 ranges.
func TestKeyRangeLimitDefault(t *testing.T) {
	s, _ := New[int](Config{Retention: time.Hour, MaxKeys: 1, Now: fixedClock(sec(3000))})
	for i := range int64(1000) {
		if _, err := s.Apply(0, ownerByID([]string{"a", "b"}[i%2]), sec(2*i), sec(2*i)); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.Ranges != 256 || st.PrunedRanges != 1000-256 {
		t.Fatalf("stats %+v, want 256 ranges, 744 pruned", st)
	}
	if got := s.Lookup(0, sec(2*999)); got.Owner == nil || got.Owner.ID != "b" {
		t.Fatalf("newest range: %+v, want b", got)
	}
}

func TestIdempotentAndOrderIndependent(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	cs := make([]claim, 200)
	for i := range cs {
		s := r.Int64N(500)
		cs[i] = claim{key: r.IntN(5), owner: testOwners[r.IntN(len(testOwners))], s: s, e: s + r.Int64N(40)}
	}
	a, b := newModelStore(t, 3, 2), newModelStore(t, 3, 2)
	applyAll(t, a, cs)
	before := a.Stats()
	applyAll(t, a, cs)
	if after := a.Stats(); after.Ranges != before.Ranges || after.Conflicts != before.Conflicts {
		t.Fatalf("re-applying changed the store: %+v -> %+v", before, after)
	}
	slices.Reverse(cs)
	applyAll(t, b, cs)
	for k := range 5 {
		if !slices.Equal(storeSegments(a, k), storeSegments(b, k)) {
			t.Fatalf("key %d differs between orders", k)
		}
	}
}

func TestValidation(t *testing.T) {
	ok := Config{Retention: time.Hour, MaxKeys: 1}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"negative MergeGap", func(c *Config) { c.MergeGap = -1 }},
		{"negative ClockSkew", func(c *Config) { c.ClockSkew = -1 }},
		{"zero Retention", func(c *Config) { c.Retention = 0 }},
		{"zero MaxKeys", func(c *Config) { c.MaxKeys = 0 }},
	} {
		c := ok
		tc.mod(&c)
		if c.Validate() == nil {
			t.Errorf("%s: Validate() = nil", tc.name)
		}
		if _, err := New[int](c); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	s, _ := New[int](Config{Retention: time.Hour, MaxKeys: 1, Now: fixedClock(sec(0))})
	for _, tc := range []struct {
		o    owners.Owner
		a, b int64
		want error
	}{
		{owners.Owner{}, 0, 1, ErrEmptyOwner},
		{ownA, 2, 1, ErrEndBeforeStart},
		{ownA, -7200, -3601, ErrExpired},
	} {
		if _, err := s.Apply(1, tc.o, sec(tc.a), sec(tc.b)); !errors.Is(err, tc.want) {
			t.Errorf("Apply(%v, %d, %d) = %v, want %v", tc.o, tc.a, tc.b, err, tc.want)
		}
	}
	if st := s.Stats(); st.Keys != 0 || st.Owners != 0 {
		t.Fatalf("failed claims stored something: %+v", st)
	}
}

func TestStrings(t *testing.T) {
	want := map[fmt.Stringer]string{
		Unattributed: "unattributed", Attributed: "attributed", Conflict: "conflict", Uncertain: "uncertain",
		ReasonNone: "", ReasonNoClaim: "no_claim_yet", ReasonAfterLastClaim: "not_yet_covered",
		ReasonBeforeFirstClaim: "before_first_claim", ReasonGap: "gap", ReasonExpired: "expired",
		ReasonOverlappingClaims: "overlapping_claims", ReasonNearOwnerChange: "near_owner_change",
		ReasonNearUnclaimedEdge: "near_unclaimed_edge",
		Status(99):              "unknown", Reason(99): "unknown",
	}
	for v, w := range want {
		if v.String() != w {
			t.Errorf("%#v.String() = %q, want %q", v, v.String(), w)
		}
	}
}

func TestExtremeTimes(t *testing.T) {
	s, _ := New[int](Config{MergeGap: time.Second, ClockSkew: time.Second, Retention: time.Hour, MaxKeys: 4, Now: fixedClock(sec(0))})
	far := time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := s.Apply(1, ownA, sec(0), far); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(1, ownB, far, far); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, s)
	if got := s.Lookup(1, far); got.Status != Conflict {
		t.Fatalf("got %+v", got)
	}
	if got := s.Lookup(1, sec(5)); got.Status != Attributed {
		t.Fatalf("got %+v", got)
	}
}

// TestConcurrent runs writers, readers and Prune in parallel; run with -race.
func TestConcurrent(t *testing.T) {
	clk := &clock{t: sec(0)}
	s, _ := New[int](Config{MergeGap: time.Second, ClockSkew: time.Second, Retention: time.Minute, MaxKeys: 50, Now: clk.Now})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range 2000 {
				ts := int64(i / 20)
				if _, err := s.Apply(r.IntN(80), testOwners[r.IntN(len(testOwners))], sec(ts), sec(ts+r.Int64N(3))); err != nil && !errors.Is(err, ErrExpired) {
					t.Error(err)
					return
				}
				if i%100 == 0 {
					clk.Set(sec(ts))
				}
			}
		})
	}
	for rd := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(rd), 2))
			for range 4000 {
				res := s.Lookup(r.IntN(80), sec(r.Int64N(100)))
				if (res.Owner != nil) != (res.Status == Attributed) {
					t.Errorf("inconsistent result %+v", res)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			s.Prune()
			_ = s.Stats()
		}
	})
	wg.Wait()
	checkInvariants(t, s)
}

// TestKeyTypes checks keys that the dedicated hashes treat alike or that
// take the generic hash: distinct keys stay distinct.
func TestKeyTypes(t *testing.T) {
	addrs, _ := New[netip.Addr](Config{Retention: time.Hour, MaxKeys: 10, Now: fixedClock(sec(100))})
	keys := []string{"10.0.0.1", "::ffff:10.0.0.1", "fe80::1", "fe80::1%eth0", "fe80::1%eth1"}
	for i, k := range keys {
		if _, err := addrs.Apply(netip.MustParseAddr(k), testOwners[i], sec(0), sec(1)); err != nil {
			t.Fatal(err)
		}
	}
	for i, k := range keys {
		if got := addrs.Lookup(netip.MustParseAddr(k), sec(0)); got.Owner == nil || !got.Owner.Equal(testOwners[i].Canonical()) {
			t.Errorf("%s: %+v, want %v", k, got, testOwners[i])
		}
	}
	type pair struct {
		ip   netip.Addr
		port uint16
	}
	pairs, _ := New[pair](Config{Retention: time.Hour, MaxKeys: 10, Now: fixedClock(sec(100))})
	a := netip.MustParseAddr("10.0.0.1")
	for port := range uint16(5) {
		if _, err := pairs.Apply(pair{a, port}, testOwners[port], sec(0), sec(1)); err != nil {
			t.Fatal(err)
		}
	}
	for port := range uint16(5) {
		if got := pairs.Lookup(pair{a, port}, sec(0)); got.Owner == nil || got.Owner.ID != testOwners[port].ID {
			t.Errorf("port %d: %+v", port, got)
		}
	}
	// Key128 is hashed inline, apart from the other key types: enough keys
	// to grow every shard's table, answered one by one and in a batch.
	const n = 20000
	k128, _ := New[Key128](Config{Retention: time.Hour, MaxKeys: n, Now: fixedClock(sec(100))})
	key := func(i int) Key128 { return AddrKey(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})) }
	for i := range n {
		if _, err := k128.Apply(key(i), testOwners[i%len(testOwners)], sec(0), sec(1)); err != nil {
			t.Fatal(err)
		}
	}
	qs := make([]Query[Key128], n+1)
	for i := range n {
		qs[i] = Query[Key128]{key(i), sec(0)}
	}
	qs[n] = Query[Key128]{key(n), sec(0)} // never claimed
	batch := k128.LookupBatch(qs, nil)
	for i, q := range qs {
		got := k128.Lookup(q.Key, q.At)
		if i < n && (got.Owner == nil || !got.Owner.Equal(testOwners[i%len(testOwners)].Canonical())) ||
			i == n && got.Reason != ReasonNoClaim {
			t.Fatalf("key %d: %+v", i, got)
		}
		if batch[i] != got {
			t.Fatalf("key %d: LookupBatch %+v, Lookup %+v", i, batch[i], got)
		}
	}
	checkInvariants(t, addrs)
	checkInvariants(t, pairs)
	checkInvariants(t, k128)
}

// TestConcurrentReadsAreConsistent checks that lock-free lookups never see a
// half-written key: a writer appends ranges of alternating owners to one key
// (each a merge that replaces the trailing range and the older ranges) while
// another grows the table with new keys; readers require every range applied
// before their lookup started to be answered with its owner.
func TestConcurrentReadsAreConsistent(t *testing.T) {
	const n = 3000
	s, _ := New[int](Config{Retention: time.Hour, MaxKeys: 1 << 20, Now: fixedClock(sec(0))})
	s.maxRanges = n // every range stays: long older arrays, replaced at each claim
	owners := []owners.Owner{ownA, ownB}
	var applied atomic.Int64 // ranges of key 0 applied so far
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range int64(n) {
			if _, err := s.Apply(0, owners[i%2], sec(10*i), sec(10*i+5)); err != nil {
				t.Error(err)
				return
			}
			applied.Store(i + 1)
		}
	})
	wg.Go(func() {
		for k := 1; k <= 20000; k++ {
			if _, err := s.Apply(k, ownC, sec(0), sec(1)); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for r := range 2 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(r), 3))
			for applied.Load() < n {
				done := applied.Load()
				if done == 0 {
					continue
				}
				i := rnd.Int64N(done)
				got := s.Lookup(0, sec(10*i+rnd.Int64N(6)))
				if got.Status != Attributed || got.Owner.ID != owners[i%2].ID {
					t.Errorf("range %d of %d applied: got %+v, want %s", i, done, got, owners[i%2].ID)
					return
				}
			}
		})
	}
	wg.Wait()
	checkInvariants(t, s)
}

// TestConcurrentGroupReuse checks lookups while Prune forgets owners and new
// owners take their freed group indexes: every generation gives each key a
// new owner for a new time window, and Prune drops the generations past
// retention. A lookup inside a window may be answered unattributed once the
// window expired, but an owner it returns must be that window's.
func TestConcurrentGroupReuse(t *testing.T) {
	const keys, gens = 8, 3000
	clk := &clock{t: sec(0)}
	s, _ := New[int](Config{Retention: 30 * time.Second, MaxKeys: keys, Now: clk.Now})
	owner := func(g int64, k int) owners.Owner { return owners.Owner{ID: fmt.Sprintf("g%d-k%d", g, k)} }
	var gen atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for g := int64(1); g <= gens; g++ {
			clk.Set(sec(10 * g))
			for k := range keys {
				if _, err := s.Apply(k, owner(g, k), sec(10*g), sec(10*g+5)); err != nil {
					t.Error(err)
					return
				}
			}
			gen.Store(g)
			s.Prune()
		}
	})
	for r := range 2 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(r), 4))
			for cur := gen.Load(); cur < gens; cur = gen.Load() {
				g, k := max(1, cur-rnd.Int64N(4)), rnd.IntN(keys)
				got := s.Lookup(k, sec(10*g+2))
				if got.Status == Attributed && got.Owner.ID != owner(g, k).ID {
					t.Errorf("key %d in generation %d: got owner %s", k, g, got.Owner.ID)
					return
				}
			}
		})
	}
	wg.Wait()
	if st := s.Stats(); st.Owners > 4*keys {
		t.Errorf("%d owners interned after pruning, want at most %d", st.Owners, 4*keys)
	}
	checkInvariants(t, s)
}

// TestLookupOnReplacedTable plays a reader that found its key's slot in a
// shard table and was preempted while the table was replaced, the key's
// group freed by Prune and its number given to a new owner: the reader must
// not answer with that owner. The old table's slots no longer change, so
// only checking that the table is still the shard's can tell.
func TestLookupOnReplacedTable(t *testing.T) {
	clk := &clock{t: sec(0)}
	s, err := New[int](Config{Retention: 100 * time.Second, MaxKeys: 1000, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	mustApply := func(k int, id string, start, end int64) {
		t.Helper()
		if _, err := s.Apply(k, owners.Owner{ID: id}, sec(start), sec(end)); err != nil {
			t.Fatal(err)
		}
	}
	mustApply(0, "x", 0, 10)
	h := s.hash(0)
	old := s.tableFor(h)
	sl := old.lookup(0, h) // the reader has found the slot
	for k := 1; s.tableFor(h) == old; k++ {
		if s.hash(k)>>(64-shardBits) == h>>(64-shardBits) {
			mustApply(k, "filler", 150, 160) // grows the shard's table
		}
	}
	clk.Set(sec(200))
	mustApply(0, "y", 150, 160)
	s.Prune()                    // x's range expired: its group number is freed
	mustApply(-1, "z", 150, 160) // and given to z
	if z := s.in.groups.at(sl.gi.Load() & giMask).owner; z == nil || z.ID != "z" {
		t.Fatalf("the scenario did not reuse x's group number for z (got %v)", z)
	}
	if res, current := s.answer(old, sl, h, nanos(sec(5))); current {
		t.Fatalf("answer from the replaced table was taken as current: %+v", res)
	}
	if o := s.trailingOwner(old, sl, h, nanos(sec(5))); o != nil {
		t.Fatalf("trailingOwner from the replaced table answered %v", o)
	}
	if res := s.Lookup(0, sec(5)); res.Owner != nil {
		t.Fatalf("Lookup(0, 5s) = %+v, want no owner: x's range expired and z never claimed key 0", res)
	}
}

// TestOwnersOfEvictedKeysAreCollected floods a store limited to a few keys
// with claims for distinct keys, each with an owner of its own: the interned
// owners must stay a function of MaxKeys, not of the flood, while every
// owner still referenced keeps answering lookups.
func TestOwnersOfEvictedKeysAreCollected(t *testing.T) {
	const maxKeys, flood = 2000, 200_000
	s, err := New[int](Config{MergeGap: time.Second, Retention: time.Hour, MaxKeys: maxKeys, Now: fixedClock(sec(100))})
	if err != nil {
		t.Fatal(err)
	}
	bound := 0
	for i := range flood {
		o := owners.Owner{ID: fmt.Sprintf("owner-%d", i), Attributes: []owners.Attribute{{Name: "n", Value: fmt.Sprint(i)}}}
		if _, err := s.Apply(i, o, sec(10), sec(20)); err != nil {
			t.Fatal(err)
		}
		st := s.Stats()
		if st.Keys > maxKeys {
			t.Fatalf("after %d claims: %d keys, want at most %d", i+1, st.Keys, maxKeys)
		}
		bound = max(bound, st.Owners)
	}
	// Collection keeps the live owners plus what grew since: at most
	// 1.25 times the live ones, a sixteenth of the keys and the minimum.
	if limit := maxKeys + maxKeys/4 + maxKeys/16 + minCollectAt; bound > limit {
		t.Errorf("interned owners peaked at %d, want at most %d", bound, limit)
	}
	for i := flood - maxKeys; i < flood; i++ {
		r := s.Lookup(i, sec(15))
		if r.Status != Attributed || r.Owner.ID != fmt.Sprintf("owner-%d", i) {
			t.Fatalf("key %d: %+v, want owner-%d", i, r, i)
		}
	}
}
