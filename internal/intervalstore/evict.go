package intervalstore

// lruHeap orders keys by the Apply sequence number of their last claim. It
// is lazy: Apply only records the new number in the key's slot; the heap
// entry is refreshed when it reaches the top during eviction. Each refresh
// is paid for by an Apply, so eviction is amortised O(log keys).
type lruHeap[K comparable] struct {
	h []lruNode[K]
}

type lruNode[K comparable] struct {
	key K
	seq uint64
}

func (l *lruHeap[K]) push(key K, seq uint64) {
	l.h = append(l.h, lruNode[K]{key, seq})
	l.up(len(l.h) - 1)
}

func (l *lruHeap[K]) min() (K, uint64) { return l.h[0].key, l.h[0].seq }

// fixMin raises the top entry's sequence number to seq.
func (l *lruHeap[K]) fixMin(seq uint64) {
	l.h[0].seq = seq
	l.down(0)
}

func (l *lruHeap[K]) popMin() {
	n := len(l.h) - 1
	l.h[0] = l.h[n]
	l.h[n] = lruNode[K]{}
	l.h = l.h[:n]
	if n > 0 {
		l.down(0)
	}
}

// filter keeps the keys for which get reports ok, refreshed to its sequence
// number, and re-establishes the heap order.
func (l *lruHeap[K]) filter(get func(K) (uint64, bool)) {
	w := 0
	for _, n := range l.h {
		if seq, ok := get(n.key); ok {
			l.h[w] = lruNode[K]{n.key, seq}
			w++
		}
	}
	clear(l.h[w:])
	l.h = l.h[:w]
	for i := w/2 - 1; i >= 0; i-- {
		l.down(i)
	}
}

func (l *lruHeap[K]) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if l.h[p].seq <= l.h[i].seq {
			return
		}
		l.h[p], l.h[i] = l.h[i], l.h[p]
		i = p
	}
}

func (l *lruHeap[K]) down(i int) {
	n := len(l.h)
	for {
		c := 2*i + 1
		if c >= n {
			return
		}
		if c+1 < n && l.h[c+1].seq < l.h[c].seq {
			c++
		}
		if l.h[i].seq <= l.h[c].seq {
			return
		}
		l.h[i], l.h[c] = l.h[c], l.h[i]
		i = c
	}
}
