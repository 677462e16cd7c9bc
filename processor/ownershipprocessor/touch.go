package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"runtime"

	"github.com/flowattr/flowattr/internal/intervalstore"
)

// touchOwners brings the owners of results, then their attributes, into
// the CPU caches before the records are written. The store's owners lie
// anywhere in the heap, one or more per address, so writing a record
// waits on memory for its owner; the loads of one pass here do not depend
// on one another, so their cache misses overlap instead.
func touchOwners(results []intervalstore.Result) {
	n := 0
	for i := range results {
		if o := results[i].Owner; o != nil {
			n += len(o.Attributes)
		}
	}
	for i := range results {
		if o := results[i].Owner; o != nil && len(o.Attributes) > 0 {
			n += len(o.Attributes[0].Value)
		}
	}
	runtime.KeepAlive(n) // the loads must not be optimised away
}
