package intervalstore

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestLookupBatchEqualsLookup checks LookupBatch against Lookup on random
// stores (gaps, conflicts, skew, evictions, expired times) and random
// queries, with batch lengths around the touch group size.
func TestLookupBatchEqualsLookup(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for round := range 200 {
		s, err := New[int](Config{
			MergeGap: time.Duration(r.Int64N(3)), ClockSkew: time.Duration(r.Int64N(3)),
			Retention: 30, MaxKeys: 8 + r.IntN(24), Now: fixedClock(at(60)),
		})
		if err != nil {
			t.Fatal(err)
		}
		for range r.IntN(200) {
			k, st := r.IntN(40), r.Int64N(70)
			// Errors (expired claims) are part of the random input.
			_, _ = s.Apply(k, testOwners[r.IntN(len(testOwners))], at(st), at(st+r.Int64N(8)))
		}
		qs := make([]Query[int], r.IntN(3*lookupAhead+2))
		for i := range qs {
			qs[i] = Query[int]{Key: r.IntN(48), At: at(r.Int64N(80))}
		}
		prefix := []Result{{Status: Conflict}}
		got := s.LookupBatch(qs, prefix)
		if len(got) != len(qs)+1 || got[0] != prefix[0] {
			t.Fatalf("round %d: LookupBatch did not append to out: %d results", round, len(got))
		}
		for i, q := range qs {
			if want := s.Lookup(q.Key, q.At); got[i+1] != want {
				t.Fatalf("round %d: query %d (%d at %v): LookupBatch %+v, Lookup %+v", round, i, q.Key, q.At, got[i+1], want)
			}
		}
	}
}

// TestLookupBatchConcurrentApply runs LookupBatch while a writer adds keys,
// extends and splits ranges and grows tables; run with -race. Keys the writers never
// touch must keep their answers; the others must only ever be attributed to
// an owner that claimed them, or unattributed.
func TestLookupBatchConcurrentApply(t *testing.T) {
	s, err := New[int](Config{MergeGap: 1, Retention: time.Hour, MaxKeys: 1000, Now: fixedClock(at(1000))})
	if err != nil {
		t.Fatal(err)
	}
	const stable = 100
	for k := range stable {
		if _, err := s.Apply(k, testOwners[k%len(testOwners)], at(0), at(100)); err != nil {
			t.Fatal(err)
		}
	}
	qs := make([]Query[int], 0, 2*stable)
	for k := range stable {
		qs = append(qs, Query[int]{Key: k, At: at(50)}, Query[int]{Key: 1000 + k, At: at(50)})
	}
	want := s.LookupBatch(qs, nil)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(3, 3))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Only "a" owners claim the changing keys, so that any owner
			// read for them must have ID "a".
			k := 1000 + r.IntN(800)
			if _, err := s.Apply(k, testOwners[r.IntN(2)], at(int64(i%100)), at(int64(i%100)+5)); err != nil {
				t.Error(err)
				return
			}
			if i%64 == 0 {
				runtime.Gosched()
			}
		}
	}()
	var out []Result
	for range 300 {
		out = s.LookupBatch(qs, out[:0])
		for i, res := range out {
			if qs[i].Key < stable {
				if res != want[i] {
					t.Fatalf("stable key %d: %+v, want %+v", qs[i].Key, res, want[i])
				}
				continue
			}
			if res.Owner != nil && res.Owner.ID != "a" {
				t.Fatalf("key %d attributed to %q, which never claimed it", qs[i].Key, res.Owner.ID)
			}
		}
	}
	close(stop)
	wg.Wait()
}

// BenchmarkLookupBatch is BenchmarkLookup's store and plan answered in
// batches of 1000 (a plog batch of flow records); ns/op is per lookup.
func BenchmarkLookupBatch(b *testing.B) {
	s := benchStore(b, benchKeys, 3)
	for _, lt := range lookupTimes {
		b.Run(lt.name, func(b *testing.B) {
			keys, times := lookupPlan(benchKeys, lt.newest)
			qs := make([]Query[Key128], len(keys))
			for i := range keys {
				qs[i] = Query[Key128]{Key: keys[i], At: times[i]}
			}
			const batch = 1000
			out := make([]Result, 0, batch)
			cpu := startMeasure(b)
			defer cpu.report(b)
			j := 0
			for n := 0; n < b.N; n += batch {
				m := min(batch, b.N-n)
				if j+m > len(qs) {
					j = 0
				}
				out = s.LookupBatch(qs[j:j+m], out[:0])
				for _, res := range out {
					if res.Status != Attributed {
						b.Fatal("not attributed")
					}
				}
				j += m
			}
		})
	}
}
