package intervalstore

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/flowattr/flowattr/internal/owners"
)

// TestApplyBatchEqualsApply applies the same random claims (refused ones,
// expired ones, conflicts, evictions included) to one store by Apply and to
// another by ApplyBatch, in batches of random length, and compares every
// outcome, then every lookup and the stats.
func TestApplyBatchEqualsApply(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 11))
	for round := range 200 {
		cfg := Config{
			MergeGap: time.Duration(r.Int64N(3)), ClockSkew: time.Duration(r.Int64N(3)),
			Retention: 30, MaxKeys: 8 + r.IntN(24), Now: fixedClock(at(60)),
		}
		one, err := New[int](cfg)
		if err != nil {
			t.Fatal(err)
		}
		batched, err := New[int](cfg)
		if err != nil {
			t.Fatal(err)
		}
		cs := make([]Claim[int], r.IntN(200))
		for i := range cs {
			st := r.Int64N(70)
			o := testOwners[r.IntN(len(testOwners))]
			if r.IntN(20) == 0 {
				o = owners.Owner{} // ErrEmptyOwner
			}
			cs[i] = Claim[int]{Key: r.IntN(40), Owner: o, Start: at(st), End: at(st + r.Int64N(8) - 1)}
		}
		var got []ClaimResult
		for rest := cs; len(rest) > 0; {
			n := min(len(rest), 1+r.IntN(3*lookupAhead))
			before := len(got)
			got = batched.ApplyBatch(rest[:n], got)
			if len(got) != before+n {
				t.Fatalf("round %d: ApplyBatch of %d claims appended %d outcomes", round, n, len(got)-before)
			}
			rest = rest[n:]
		}
		for i, c := range cs {
			res, err := one.Apply(c.Key, c.Owner, c.Start, c.End)
			if want := (ClaimResult{res, err}); got[i] != want {
				t.Fatalf("round %d: claim %d %+v: ApplyBatch %+v, Apply %+v", round, i, c, got[i], want)
			}
		}
		for k := range 48 {
			for tn := range int64(80) {
				if g, w := batched.Lookup(k, at(tn)), one.Lookup(k, at(tn)); g.Status != w.Status || g.Reason != w.Reason || !ownerEqual(g.Owner, w.Owner) {
					t.Fatalf("round %d: key %d at %d: batched %+v, one by one %+v", round, k, tn, g, w)
				}
			}
		}
		if g, w := batched.Stats(), one.Stats(); g != w {
			t.Fatalf("round %d: stats batched %+v, one by one %+v", round, g, w)
		}
	}
}

func ownerEqual(a, b *owners.Owner) bool {
	return a == nil && b == nil || a != nil && b != nil && a.Equal(*b)
}

// BenchmarkApplyBatch is BenchmarkApply's claims applied in batches of
// 1000; ns/op is per claim.
func BenchmarkApplyBatch(b *testing.B) {
	s := benchStore(b, benchKeys, 1)
	r := rand.New(rand.NewPCG(2, 2))
	order := r.Perm(benchKeys)
	const batch = 1000
	cs := make([]Claim[Key128], 0, batch)
	out := make([]ClaimResult, 0, batch)
	cpu := startMeasure(b)
	defer cpu.report(b)
	for i := 0; i < b.N; {
		cs = cs[:0]
		for ; i < b.N && len(cs) < batch; i++ {
			k := order[i%benchKeys]
			end := base.Add(60*time.Second + time.Duration(i/benchKeys+1)*time.Second)
			cs = append(cs, Claim[Key128]{Key: benchKey(k), Owner: benchOwners[k%len(benchOwners)], Start: end.Add(-time.Second), End: end})
		}
		out = s.ApplyBatch(cs, out[:0])
		for _, res := range out {
			if res.Err != nil {
				b.Fatal(res.Err)
			}
		}
	}
}
