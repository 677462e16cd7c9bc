package localowner

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowattr/flowattr/internal/owners"
)

func TestOwnershipPrecedenceAndLongestPrefix(t *testing.T) {
	clock := newManualClock(at(0))
	file := newMapSource("10.0.0.1", "from-file", "10.0.0.0/8", "file-wide")
	static := newMapSource("10.0.0.1", "from-static", "10.1.2.0/24", "static-narrow", "10.9.9.9", "static-only")
	own := New([]Source{file, static}, clockSettings(clock))
	ownerOf := func(s string) string {
		e, ok := own.Lookup(netip.MustParseAddr(s))
		if !ok {
			return ""
		}
		return e.Owner().ID
	}
	assert.Equal(t, "from-file", ownerOf("10.0.0.1"), "same prefix: first in precedence wins")
	assert.Equal(t, "static-narrow", ownerOf("10.1.2.3"), "longest prefix wins whatever the source")
	assert.Equal(t, "file-wide", ownerOf("10.200.0.1"))
	assert.Equal(t, "static-only", ownerOf("10.9.9.9"))
	assert.Empty(t, ownerOf("192.0.2.1"))

	own = New([]Source{static, file}, clockSettings(clock))
	assert.Equal(t, "from-static", lookup(t, own, "10.0.0.1").Owner().ID)
}

func TestOwnershipRenewsPrefixesAroundRemovedOne(t *testing.T) {
	clock, src, own := startOwnership(t, 0,
		"10.0.0.0/16", "wide", "10.0.1.0/24", "pool", "10.0.1.5", "x", "10.0.1.64/26", "sub",
		"10.0.2.0/24", "other", "10.0.3.7", "y")
	assert.True(t, lookup(t, own, "10.0.1.5").HeldThroughout(at(-1), bootAt(-1), true), "entries made before capture predate every flow")

	rebuildAt(clock, src, 10, "10.0.0.0/16", "wide", "10.0.1.0/24", "pool", "10.0.1.64/26", "sub",
		"10.0.2.0/24", "other", "10.0.3.7", "y2")

	// 10.0.1.5 falls back to the /24: pool's only from now on, and so,
	// conservatively, every address of the /24 and of the /16 around it.
	for _, addr := range []string{"10.0.1.5", "10.0.1.9", "10.0.9.9"} {
		e := lookup(t, own, addr)
		assertSince(t, e, 10, addr)
		assert.False(t, e.HeldThroughout(at(9), bootAt(9), true), addr)
		assert.True(t, e.HeldThroughout(at(10), bootAt(10), true), addr)
	}
	assert.Equal(t, "pool", lookup(t, own, "10.0.1.5").Owner().ID)
	// Prefixes that neither contain the removed one nor changed keep their
	// entries.
	for _, addr := range []string{"10.0.1.70", "10.0.2.1"} {
		assert.True(t, lookup(t, own, addr).HeldThroughout(at(-1), bootAt(-1), true), addr)
	}
	// A changed owner is known from the rebuild; the entry is not initial.
	assertSince(t, lookup(t, own, "10.0.3.7"), 10)
	assert.False(t, lookup(t, own, "10.0.3.7").HeldThroughout(at(9), bootAt(9), true))

	// A renewed entry keeps its renewal time across unchanged rebuilds.
	clock.Set(at(20))
	src.notify()
	assertSince(t, lookup(t, own, "10.0.1.5"), 10)
}

// After the wall clock steps back, entries carried over are dated ahead of
// the rebuild: a prefix that a removed one falls back to is renewed all the
// same, or a flow of the removed prefix's owner would be stamped with the
// wider prefix's owner.
func TestOwnershipRenewsPrefixesAfterTheClockStepsBack(t *testing.T) {
	clock, src, own := startOwnership(t, 100, "10.0.1.0/24", "pool", "10.0.1.5", "x")

	rebuildAt(clock, src, 50, "10.0.1.0/24", "pool")
	e := lookup(t, own, "10.0.1.5")
	assert.Equal(t, "pool", e.Owner().ID)
	assert.False(t, e.HeldThroughout(at(40), bootAt(40), true), "a flow of x's time must not be pool's")
	assertSince(t, e, 50)
}

// hookSource runs hook whenever a rebuild reads its entries: in the middle
// of the rebuild.
type hookSource struct {
	*mapSource
	hook func()
}

func (s *hookSource) Entries() map[netip.Prefix]owners.Owner {
	if s.hook != nil {
		s.hook()
	}
	return s.mapSource.Entries()
}

// A rebuild dates its changes when it publishes them: until then readers
// see the previous owner, which held the address until that moment.
func TestOwnershipDatesChangesWhenPublished(t *testing.T) {
	clock := newManualClock(at(0))
	hs := &hookSource{mapSource: newMapSource("10.0.0.1", "a")}
	own := New([]Source{hs}, clockSettings(clock))
	require.NoError(t, own.Start(context.Background()))
	claimer := NewClaimer(own, "n", at(0))
	addr := netip.MustParseAddr("10.0.0.1")
	var stampedDuringMerge string
	hs.hook = func() { // the merge runs from 10 s to 10.5 s
		clock.Set(at(10.5))
		if e, _ := own.Lookup(addr); e.HeldThroughout(at(10.2), bootAt(10.2), true) {
			stampedDuringMerge = e.Owner().ID
		}
	}
	clock.Set(at(10))
	hs.set("10.0.0.1", "b")
	hs.hook = nil

	spans := map[string][2]time.Time{}
	for _, c := range claimer.CloseInterval(at(20)) {
		spans[c.Owner.ID] = span(c)
	}
	assert.Equal(t, "a", stampedDuringMerge, "readers see a until the rebuild publishes b")
	assert.Equal(t, map[string][2]time.Time{"a": {at(0), at(10.5)}, "b": {at(10.5), at(20)}}, spans,
		"a held the address until the rebuild published b, b from then")
}
