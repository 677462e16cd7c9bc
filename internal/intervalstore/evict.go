package intervalstore

// evictQueue orders keys for eviction by second chance (the CLOCK
// approximation of least recently used): a key enters at the tail when it
// is created; the key at the head is evicted if it has had no claim since it
// entered, otherwise it re-enters at the tail with its mark cleared. Apply
// only sets the key's mark (slotReferenced) in its slot, so a claim does
// no queue work, and each eviction is amortised O(1): every re-entry is paid
// for by an Apply.
//
// It holds every live key exactly once. Guarded by Store.wmu.
type evictQueue[K comparable] struct {
	q    []K
	head int
}

func (e *evictQueue[K]) len() int { return len(e.q) - e.head }

func (e *evictQueue[K]) push(key K) { e.q = append(e.q, key) }

func (e *evictQueue[K]) pop() K {
	var zero K
	k := e.q[e.head]
	e.q[e.head] = zero
	e.head++
	// Reclaim the consumed front once it is half the slice: amortised O(1).
	if e.head >= 1024 && e.head*2 >= len(e.q) {
		n := copy(e.q, e.q[e.head:])
		clear(e.q[n:])
		e.q, e.head = e.q[:n], 0
	}
	return k
}

// filter keeps the keys for which keep reports true, in order.
func (e *evictQueue[K]) filter(keep func(K) bool) {
	w := 0
	for _, k := range e.q[e.head:] {
		if keep(k) {
			e.q[w] = k
			w++
		}
	}
	clear(e.q[w:])
	e.q, e.head = e.q[:w], 0
}
