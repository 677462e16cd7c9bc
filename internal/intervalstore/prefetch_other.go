//go:build !amd64 && !arm64

package intervalstore

import "unsafe"

// prefetch does nothing on this architecture, which has no prefetch here:
// a LookupBatch costs what its lookups do.
func prefetch(unsafe.Pointer) {}
