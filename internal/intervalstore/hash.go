package intervalstore

import (
	"encoding/binary"
	"hash/maphash"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"unsafe"
)

// hasher is a seeded hash function for K. maphash.Comparable works for
// every key type but costs more than the lookup it serves for struct keys
// such as netip.Addr, so the common key types get a dedicated hash; the
// choice is made once, in newHasher, not per call. Key128, the processor's
// key, is hashed inline: a call through a function value costs a lookup a
// few percent (BenchmarkLookupAgainstMap).
type hasher[K comparable] struct {
	key128 bool // K is Key128: hash ignores f
	s0, s1 uint64
	f      func(K) uint64
}

func newHasher[K comparable]() hasher[K] {
	s0, s1 := rand.Uint64(), rand.Uint64()|1
	seed := maphash.MakeSeed()
	var h any
	switch any(*new(K)).(type) {
	case Key128:
		return hasher[K]{key128: true, s0: s0, s1: s1}
	case netip.Addr:
		// The zone is left out: addresses differing only in zone collide,
		// which costs a probe, not correctness (keys are compared in full).
		h = func(a netip.Addr) uint64 {
			b := a.As16()
			return mix(binary.LittleEndian.Uint64(b[:8])^s0, binary.LittleEndian.Uint64(b[8:])^s1)
		}
	case string:
		h = func(k string) uint64 { return maphash.String(seed, k) }
	case uint64:
		h = func(k uint64) uint64 { return mix(k^s0, s1) }
	case int:
		h = func(k int) uint64 { return mix(uint64(k)^s0, s1) }
	}
	if f, ok := h.(func(K) uint64); ok {
		return hasher[K]{f: f}
	}
	return hasher[K]{f: func(k K) uint64 { return maphash.Comparable(seed, k) }}
}

// hash returns k's hash.
func (h *hasher[K]) hash(k K) uint64 {
	if h.key128 {
		w := (*[2]uint64)(unsafe.Pointer(&k)) // in the machine's byte order: the hash need only be the same within the process
		return mix(w[0]^h.s0, w[1]^h.s1)
	}
	return h.f(k)
}

// mix folds the 128-bit product of a and b (wyhash's mixing step).
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}
