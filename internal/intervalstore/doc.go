// Package intervalstore keeps heartbeat-based ownership: for every key
// (normally an IP address, but the store is generic over any comparable key)
// a sorted list of non-overlapping time ranges, each held by one owner or, where
// claims of different owners overlap, marked as a conflict. As in a Go map, a
// key must equal itself: one holding a floating-point NaN is never found.
//
// # Definition
//
// The state of a key is defined declaratively by the set of claims applied to
// it, independent of their order. Times are nanoseconds since the Unix epoch
// and ranges are inclusive: [start, end] covers every nanosecond t with
// start <= t <= end.
//
//   - Coverage. Owners are identified by Owner.ID. The coverage of an owner is
//     the union of its claims, where two claims are joined into one component
//     when they overlap, touch, or the gap between them is at most
//     Config.MergeGap. Time is discrete (nanoseconds), so the gap is the
//     number of nanoseconds neither covers, next.start-prev.end-1, and
//     [a, b] touches [b+1, c]. Joining is transitive (gap closure). Claims
//     of other owners do not prevent joining: A, B, A within MergeGap makes B's
//     claim a conflict rather than splitting A.
//   - Attributes. All of a component's time carries the attributes of the claim
//     that ends last in it; if several end at the same time, the greatest one
//     by (Name, Value) lexicographic order wins. So a workload whose labels
//     change keeps one range and reports its newest labels.
//   - Ranges. The stored list of a key is the partition of all covered time into
//     maximal ranges over which the set of covering owners (with their
//     attributes) is constant. A range covered by one owner is an owner range;
//     a range covered by two or more is a conflict range remembering every
//     owner in it.
//   - Lookup(key, t):
//     t in a conflict range: Conflict, ReasonOverlappingClaims;
//     t in an owner range of owner o, with W = [t-ClockSkew, t+ClockSkew]:
//     Attributed to o when o's coverage (its component holding t) covers all
//     of W; else Uncertain, ReasonNearOwnerChange when a point of W is
//     covered by an owner other than o (another owner's range or a conflict
//     range); else, part of W being covered by no claim, Unattributed with
//     ReasonExpired if t < now-Retention, otherwise ReasonNearUnclaimedEdge.
//     The last case is not final: o is known at t, but a claim not yet
//     applied (another owner's, whose clock put an owner change near t) may
//     still cover W. So a time within ClockSkew of the newest range's end
//     waits for the next claim, and one within ClockSkew of an owner's first
//     claim waits for the claim of whoever came before.
//     t not covered: Unattributed with, in this order, ReasonExpired if
//     t < now-Retention; ReasonNoClaim if the key is unknown;
//     ReasonAfterLastClaim if t is after the last range; ReasonGap if t is
//     between two ranges or before the first one after earlier ranges were
//     pruned; else ReasonBeforeFirstClaim.
//     Covered times are answered from the ranges held even when older than
//     now-Retention (until Prune drops them): they are still true, and the
//     common attributed lookup then needs no clock read.
//     With ClockSkew 0, W is {t} and the owner cases reduce to Attributed.
//
// Because the definition only depends on the set of claims, applying the same
// claims in any order yields the same ranges, and re-applying a claim changes
// nothing. Apply maintains the definition incrementally: it only touches the
// ranges within the new claim's component.
//
// # Retention and limits
//
// Apply refuses claims that end before now-Retention (ErrExpired). Prune drops
// ranges that end before now-Retention and keys left without ranges; history is
// forgotten there, so the definition above holds for the retained claims (near
// the retention horizon, within MergeGap or ClockSkew of pruned ranges, answers
// may differ from what the full history would give; lookups that old already
// report ReasonExpired). A key holds at most 256 ranges; beyond that its
// oldest ranges are dropped as if pruned (counted in Stats.PrunedRanges), so
// that a claim that changes a key's ranges, which copies them, costs at most
// a few microseconds even for a key whose owner changes every second.
//
// When a new key would exceed Config.MaxKeys, a key is evicted by second
// chance, the CLOCK approximation of least recently used: keys wait in a FIFO
// queue, entering at the tail when created; the key at the head is evicted if
// it has had no Apply since it entered, otherwise it re-enters at the tail.
// So a key is evicted only when it has been idle for at least a full turn of
// the queue, and idle keys go before keys given claims; unlike exact LRU,
// among keys given claims the order is when they re-entered the queue, not
// when their last claim came (keys A, B, C created in that order, then C
// claimed, then A: two evictions take B, then A before C, though C's claim is
// older, because the first eviction passed A and spent its second chance).
// In return a claim does no eviction bookkeeping beyond setting a bit.
//
// # Concurrency and memory
//
// All methods are safe for concurrent use. Writers (Apply, ApplyBatch, Prune,
// Stats) are serialised by one mutex. Lookups take no lock: keys live in
// open-addressing hash tables (one per shard of the key hash, each grown by
// a third when three quarters full) whose slots (48 bytes for Key128 keys)
// hold the key, the trailing range inline and its owner as a 32-bit index,
// changed under a
// per-slot sequence lock that readers retry on. Older ranges live in an
// immutable, pointer-free array per key (20 bytes a range), which a lookup
// reads only when the trailing range does not answer it: a lookup at a time
// whose ClockSkew neighbourhood lies in the trailing range reads one slot
// and the owner. Owners and owner sets are interned and numbered; those no
// longer referenced are swept by Prune and their numbers reused, which is
// why a lookup resolves numbers before its sequence check, and then checks
// that its shard's table was not replaced meanwhile. Interned owners
// share one copy of each attribute name. With 1M keys of 3-4 ranges the
// store holds about 45 bytes per range (BenchmarkMemory).
//
// A random lookup in a store much larger than the CPU caches waits on
// memory: LookupBatch prefetches the slot of the key 16 queries ahead while
// it answers one, and ApplyBatch hashes up to 16 keys and loads what they
// will read together, so that the misses overlap (see
// BenchmarkLookupAgainstMap and BenchmarkApplyBatch).
package intervalstore
