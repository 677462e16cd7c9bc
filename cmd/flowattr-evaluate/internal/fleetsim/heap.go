package fleetsim

// timedHeap is a binary min-heap ordered by (at, seq): seq breaks ties in
// insertion order, which keeps runs deterministic.
type timedHeap[T any] struct {
	items []T
	key   func(*T) (at int64, seq uint64)
}

func (h *timedHeap[T]) less(i, j int) bool {
	ai, si := h.key(&h.items[i])
	aj, sj := h.key(&h.items[j])
	return ai < aj || (ai == aj && si < sj)
}

func (h *timedHeap[T]) Len() int { return len(h.items) }

// peekAt returns the time of the earliest item; the heap must not be empty.
func (h *timedHeap[T]) peekAt() int64 {
	at, _ := h.key(&h.items[0])
	return at
}

func (h *timedHeap[T]) push(x T) {
	h.items = append(h.items, x)
	i := len(h.items) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			break
		}
		h.items[i], h.items[p] = h.items[p], h.items[i]
		i = p
	}
}

func (h *timedHeap[T]) pop() T {
	top := h.items[0]
	last := len(h.items) - 1
	h.items[0] = h.items[last]
	var zero T
	h.items[last] = zero
	h.items = h.items[:last]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < last && h.less(l, m) {
			m = l
		}
		if r < last && h.less(r, m) {
			m = r
		}
		if m == i {
			return top
		}
		h.items[i], h.items[m] = h.items[m], h.items[i]
		i = m
	}
}
