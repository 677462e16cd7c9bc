//go:build amd64 || arm64

package intervalstore

import "unsafe"

// prefetch asks the CPU to bring the two cache lines from p on into its
// caches, without waiting for them: unlike a load, a prefetch does not hold
// up the instructions after it until the memory arrives. p may be any
// address; a prefetch never faults.
//
//go:noescape
func prefetch(p unsafe.Pointer)
