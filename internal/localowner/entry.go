package localowner // import "github.com/flowattr/flowattr/internal/localowner"

import (
	"strings"
	"time"

	"github.com/flowattr/flowattr/internal/owners"
)

// Entry is the owner a prefix resolves to in one merge of the sources, and
// when this host learnt it. Entries are immutable and shared by every lookup
// of a merged map; a prefix keeps its Entry across merges while its owner
// stays the same.
type Entry struct {
	owner owners.Owner
	// key identifies the owner (ID and attributes): a prefix whose owner
	// has the same key across a rebuild keeps its entry.
	key string
	// since is when this host started to know every address of the prefix
	// that the prefix resolves as this owner's: claims for them never start
	// earlier. sinceBoot is the same moment on the kernel's boot clock,
	// which flows are compared with (see HeldThroughout).
	since     time.Time
	sinceBoot time.Duration
	// published is when the merge that made the entry was published:
	// since too, unless a TimedSource dated the tenure earlier.
	published time.Time
	// initial marks an entry made before Start returned, before the
	// receiver captures: it predates every flow.
	initial bool
}

// Owner returns the entry's owner. Its attributes are shared: do not modify
// them.
func (e *Entry) Owner() owners.Owner { return e.owner }

// HeldThroughout reports whether e's owner held its address for all of a
// flow that started at start on the wall clock and at startBoot on the
// kernel's boot clock, as far as this host knows: whether the flow may name
// it as its local owner, a claim from the flow's start. A flow that began
// before its address's owner changed, or before this host learnt it, was
// not. A flow whose start is not known (startKnown false: its birth was not
// captured, start is when capture first saw it) may be older than any
// change: only an owner known since before capture held its address
// throughout.
//
// Both clocks must agree. The boot clock never steps, but a flow's
// wall-clock start is converted with the clock offset of when it was read:
// a step between its start and then moves it across since. The wall-clock
// start is what the ownership processor claims from, so it must not lie
// before since either.
func (e *Entry) HeldThroughout(start time.Time, startBoot time.Duration, startKnown bool) bool {
	if e.initial {
		return true
	}
	return startKnown && startBoot >= e.sinceBoot && !start.Before(e.since)
}

func ownerKey(o owners.Owner) string {
	var b strings.Builder
	b.WriteString(o.ID)
	for _, a := range o.Attributes {
		b.WriteByte(0)
		b.WriteString(a.Name)
		b.WriteByte(0)
		b.WriteString(a.Value)
	}
	return b.String()
}
