package intervalstore

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/flowattr/flowattr/internal/owners"
)

var testOwners = func() []owners.Owner {
	var os []owners.Owner
	for _, id := range []string{"a", "b", "c", "d"} {
		os = append(os,
			owners.Owner{ID: id},
			owners.Owner{ID: id, Attributes: []owners.Attribute{{Name: "v", Value: "2"}, {Name: "app", Value: id}}},
		)
	}
	return os
}()

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func newModelStore(t testing.TB, gap, skew int64) *Store[int] {
	t.Helper()
	s, err := New[int](Config{
		MergeGap: time.Duration(gap), ClockSkew: time.Duration(skew),
		Retention: time.Hour, MaxKeys: 100, Now: fixedClock(at(1000)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func randomClaims(r *rand.Rand, nKeys int) []claim {
	cs := make([]claim, 1+r.IntN(16))
	for i := range cs {
		s := r.Int64N(60)
		cs[i] = claim{key: r.IntN(nKeys), owner: testOwners[r.IntN(len(testOwners))], s: s, e: s + r.Int64N(12)}
	}
	return cs
}

func applyAll(t testing.TB, s *Store[int], cs []claim) {
	t.Helper()
	for _, c := range cs {
		if _, err := s.Apply(c.key, c.owner, at(c.s), at(c.e)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPropertyOrderIndependent applies random claim sets in random orders
// (with repeats) to separate stores and checks each against the model.
func TestPropertyOrderIndependent(t *testing.T) {
	const nKeys = 3
	r := rand.New(rand.NewPCG(1, 2))
	cases := 3000
	if testing.Short() {
		cases = 300
	}
	for range cases {
		gap, skew := r.Int64N(5), r.Int64N(4)
		cs := randomClaims(r, nKeys)
		var dumps [][][]seg
		for range 3 {
			perm := slices.Clone(cs)
			r.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
			perm = append(perm, perm[:r.IntN(len(perm)+1)]...) // re-applied claims change nothing
			s := newModelStore(t, gap, skew)
			applyAll(t, s, perm)
			checkInvariants(t, s)
			checkAgainstModel(t, s, cs, nKeys, -3, 80, -1e12)
			var d [][]seg
			for k := range nKeys {
				d = append(d, storeSegments(s, k))
			}
			dumps = append(dumps, d)
		}
		for _, d := range dumps[1:] {
			for k := range nKeys {
				if !slices.Equal(d[k], dumps[0][k]) {
					t.Fatalf("orders disagree on key %d: %v vs %v", k, d[k], dumps[0][k])
				}
			}
		}
	}
}

// FuzzStore decodes the input into configuration and a sequence of claims
// and lookups, checking invariants and the model after every step.
func FuzzStore(f *testing.F) {
	f.Add([]byte{2, 1, 0, 0, 10, 5, 0, 3, 8, 9, 1, 2, 3, 4})
	f.Add([]byte{0, 0, 0, 4, 0, 10, 0, 5, 5, 10, 0, 0, 10, 0, 0, 1, 11, 3})
	f.Add([]byte{5, 3, 0, 1, 20, 4, 0, 2, 26, 4, 0, 1, 32, 4, 0, 7, 23, 9, 1, 0, 24, 0})
	f.Add([]byte{1, 2, 0, 0, 0, 15, 0, 3, 7, 3, 0, 6, 2, 15, 0, 1, 0, 15})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		const nKeys = 2
		s := newModelStore(t, int64(data[0]%6), int64(data[1]%4))
		var cs []claim
		for data = data[2:]; len(data) >= 4; data = data[4:] {
			op, a, b, c := data[0], data[1], data[2], data[3]
			key := int(op>>1) % nKeys
			if op&1 == 1 { // lookup
				comps := components(cs, key, s.gap)
				x := int64(a%80) - 3
				got := s.Lookup(key, at(x))
				st, re, o := modelLookup(comps, x, s.skew, -1e12)
				if got.Status != st || got.Reason != re || (o == nil) != (got.Owner == nil) {
					t.Fatalf("lookup %d@%d: got %v/%v want %v/%v", key, x, got.Status, got.Reason, st, re)
				}
				continue
			}
			cl := claim{key: key, owner: testOwners[int(a)%len(testOwners)], s: int64(b % 64)}
			cl.e = cl.s + int64(c%16)
			if _, err := s.Apply(cl.key, cl.owner, at(cl.s), at(cl.e)); err != nil {
				t.Fatal(err)
			}
			cs = append(cs, cl)
			checkInvariants(t, s)
			checkAgainstModel(t, s, cs, nKeys, -3, 82, -1e12)
		}
	})
}
