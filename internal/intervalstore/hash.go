package intervalstore

import (
	"encoding/binary"
	"hash/maphash"
	"math/bits"
	"math/rand/v2"
	"net/netip"
)

// newHasher returns a seeded hash function for K. maphash.Comparable works
// for every key type but costs more than the lookup it serves for struct
// keys such as netip.Addr, so the common key types get a dedicated hash; the
// choice is made once, here, not per call.
func newHasher[K comparable]() func(K) uint64 {
	s0, s1 := rand.Uint64(), rand.Uint64()|1
	seed := maphash.MakeSeed()
	var h any
	switch any(*new(K)).(type) {
	case netip.Addr:
		// The zone is left out: addresses differing only in zone collide,
		// which costs a probe, not correctness (keys are compared in full).
		h = func(a netip.Addr) uint64 {
			b := a.As16()
			return mix(binary.LittleEndian.Uint64(b[:8])^s0, binary.LittleEndian.Uint64(b[8:])^s1)
		}
	case Key128:
		h = func(k Key128) uint64 {
			return mix(binary.LittleEndian.Uint64(k[:8])^s0, binary.LittleEndian.Uint64(k[8:])^s1)
		}
	case string:
		h = func(k string) uint64 { return maphash.String(seed, k) }
	case uint64:
		h = func(k uint64) uint64 { return mix(k^s0, s1) }
	case int:
		h = func(k int) uint64 { return mix(uint64(k)^s0, s1) }
	}
	if f, ok := h.(func(K) uint64); ok {
		return f
	}
	return func(k K) uint64 { return maphash.Comparable(seed, k) }
}

// mix folds the 128-bit product of a and b (wyhash's mixing step).
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}
