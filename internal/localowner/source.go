package localowner // import "github.com/flowattr/flowattr/internal/localowner"

import (
	"context"
	"net/netip"
	"time"

	"github.com/flowattr/flowattr/internal/owners"
)

// Source tells local ownership which owner holds which of the host's
// addresses: static configuration (StaticSource), a file another program
// writes (FileSource), Kubernetes pods and services (package
// localowner/kube, a TimedSource). A new source is one type implementing
// Source; Ownership merges all of them.
//
// An implementation must guarantee:
//
//   - Entries returns the source's current map from prefix to owner, and
//     never modifies a map it has returned: a change builds a new map.
//     Readers keep the map without a lock. Prefixes are canonical, as
//     owners.ParsePrefix returns them (IPv4-mapped addresses unmapped, host
//     bits clear, no zone); owners are canonical (owners.Owner.Canonical),
//     with a non-empty ID and no attribute named owners.IDAttribute, and
//     within the owners.Limits configured for the sources (the receiver's
//     ownership.owner_limits): a source that reads owners from elsewhere
//     checks each with Limits.Check and takes one beyond them as a load
//     error naming it, as the file source does. A nil or empty map names
//     no owner. Entries may be called from any
//     goroutine, before Start too, and returns at once what the source
//     already knows: no I/O.
//   - Start begins watching for changes. What Entries returns when Start
//     returns is the initial map: its owners are taken to have held their
//     prefixes since before any flow, as the receiver captures flows only
//     once every source has started. A source that can load its state
//     quickly should do so in Start (the file source does).
//   - After Start, Entries changes only with a call of onChange, made after
//     Entries returns the new map. onChange merges the sources and returns
//     once lookups use the new map, so a source may count a change as in
//     effect when it returns. It may be called from any goroutine, also
//     when nothing changed (a merge that finds the same owners changes
//     nothing), but never while holding a lock that Entries takes, and
//     never after Shutdown returned. No goroutine is needed: a source fed
//     by its caller (a simulator) may call onChange from that call.
//   - An owner is its ID and its attributes together: a prefix whose owner
//     keeps both keeps what is known about it across changes, and a prefix
//     that gets a new owner, or new attributes, starts a new tenure.
//   - The owner of an entry that appears after Start is known ("since")
//     from the moment the merge that onChange runs is published, not from
//     when the source learnt it nor from when the owner took the address:
//     claims for it start then, and flows that began earlier do not name
//     it. Likewise an owner the source removes, or replaces, holds the
//     prefix until that merge is published. When a prefix goes, every
//     prefix around it is known afresh from that merge, for all its
//     addresses, as Ownership does not track which addresses the removed
//     one covered. So a source should name an owner only once it holds the
//     address, remove it as soon as it no longer does, and call onChange
//     promptly: a source that lags behind leaves flows without a local
//     owner and time unclaimed, and one that runs ahead claims time the
//     owner did not hold.
//   - Shutdown stops watching and waits for the source's goroutines. It is
//     called once, after Start returned nil.
type Source interface {
	Entries() map[netip.Prefix]owners.Owner
	Start(ctx context.Context, onChange func()) error
	Shutdown() error
}

// Tenure is an owner of a prefix and when it took the prefix.
type Tenure struct {
	Owner owners.Owner
	// Since is when the owner provably took the prefix, which may be
	// before the source learnt it; zero for "from when the merge that
	// publishes it", as for a plain Source.
	Since time.Time
}

// TimedSource is a Source that knows when each of its owners took its
// prefix, which may be earlier than when the source learnt it: a Kubernetes
// pod's sandbox had its network before a collector that just (re)started
// listed the pod. Ownership merges its Tenures instead of its Entries (which
// it must still implement, with the same owners).
//
// Since is a promise, on top of Source's: the owner held the prefix from
// Since until the source removes or replaces it, without a break that the
// source did not observe. A tenure that appears with a Since before its
// merge is claimed from Since, once, and flows that started after Since
// name its owner. A tenure keeps the Since it had when it was first
// published while its owner stays the same; to start a new tenure of the
// same owner (after a gap in what the source observed) the source removes
// the prefix and publishes it again, in two calls of onChange.
type TimedSource interface {
	Source
	Tenures() map[netip.Prefix]Tenure
}
