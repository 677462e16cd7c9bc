package ebpfflowreceiver

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
)

// mapSource is an ownership source whose map the test replaces.
type mapSource struct {
	name string
	mu   sync.Mutex
	m    map[netip.Prefix]owners.Owner
}

func newMapSource(name string, kv ...string) *mapSource {
	s := &mapSource{name: name}
	s.set(kv...)
	return s
}

// set replaces the map with prefix, owner ID pairs.
func (s *mapSource) set(kv ...string) {
	m := map[netip.Prefix]owners.Owner{}
	for i := 0; i+1 < len(kv); i += 2 {
		p, err := parsePrefix(kv[i])
		if err != nil {
			panic(err)
		}
		m[p] = owners.Owner{ID: kv[i+1]}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m = m
}

func (s *mapSource) Name() string                      { return s.name }
func (*mapSource) Start(context.Context, func()) error { return nil }
func (*mapSource) Shutdown() error                     { return nil }
func (s *mapSource) Entries() map[netip.Prefix]owners.Owner {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m
}

func span(c claim) [2]time.Time { return [2]time.Time{c.Start, c.End} }

func TestHeartbeatsPeriodicClaimsTouch(t *testing.T) {
	clock := newManualClock(at(0))
	own := newOwnership([]ownershipSource{newMapSource("m", "10.0.0.1", "a", "10.0.1.0/24", "pool")}, clock.Now, clock.Boot, zap.NewNop())
	hb := newHeartbeats("node-1", at(0))

	first := hb.claims(at(10), own)
	require.Len(t, first, 1, "only the single address is claimed without traffic, not the /24")
	assert.Equal(t, flowschema.Claim{Address: netip.MustParseAddr("10.0.0.1"), Owner: owners.Owner{ID: "a"}, Start: at(0), End: at(10), Sender: "node-1"}, first[0].Claim)
	assert.Equal(t, originSource, first[0].origin)

	second := hb.claims(at(20), own)
	require.Len(t, second, 1)
	assert.Equal(t, [2]time.Time{at(10), at(20)}, span(second[0]), "consecutive claims touch")
}

func TestHeartbeatsAggregateFlows(t *testing.T) {
	clock := newManualClock(at(0))
	own := newOwnership([]ownershipSource{newMapSource("m", "10.0.0.1", "a", "10.0.1.0/24", "pool")}, clock.Now, clock.Boot, zap.NewNop())
	snap := own.snapshot()
	hb := newHeartbeats("node-1", at(0))
	hb.claims(at(10), own) // the interval is now [10, 20]

	observe := func(addr string, start, end float64) {
		a := netip.MustParseAddr(addr)
		e, ok := snap.lookup(a)
		require.True(t, ok)
		hb.observe(a, e, at(start), at(end))
	}
	observe("10.0.1.5", 12, 13)
	observe("10.0.1.5", 14, 18)
	observe("10.0.1.5", 11.5, 12) // earliest start
	observe("10.0.1.6", 3, 15)    // started before the interval: clamped
	observe("10.0.0.1", 12, 13)   // covered by the periodic claim

	got := hb.claims(at(20), own)
	require.Len(t, got, 3, "one claim per (address, owner), not one per flow")
	assert.Equal(t, "10.0.0.1", got[0].Address.String())
	assert.Equal(t, originSource, got[0].origin)
	assert.Equal(t, [2]time.Time{at(10), at(20)}, span(got[0]))

	assert.Equal(t, "10.0.1.5", got[1].Address.String())
	assert.Equal(t, originFlow, got[1].origin)
	assert.Equal(t, "pool", got[1].Owner.ID)
	assert.Equal(t, [2]time.Time{at(11.5), at(18)}, span(got[1]))

	assert.Equal(t, "10.0.1.6", got[2].Address.String())
	assert.Equal(t, [2]time.Time{at(10), at(15)}, span(got[2]), "bounded to the interval")

	assert.Len(t, hb.claims(at(30), own), 1, "flows are forgotten once claimed")
}

func TestHeartbeatsOwnerChangeMidInterval(t *testing.T) {
	clock, src, own := startOwnership(t, 0, "10.0.0.1", "a", "10.0.0.2", "b")
	hb := newHeartbeats("node-1", at(0))
	a1 := netip.MustParseAddr("10.0.0.1")
	eA, _ := own.snapshot().lookup(a1)
	hb.observe(a1, eA, at(1), at(2))

	rebuildAt(clock, src, own, 4, "10.0.0.1", "c", "10.0.0.2", "b")
	eC, _ := own.snapshot().lookup(a1)
	hb.observe(a1, eC, at(3), at(6)) // started before the change was known

	got := hb.claims(at(10), own)
	require.Len(t, got, 3)
	// 10.0.0.1: a until the change was loaded (its flow within that), then
	// c from then on.
	assert.Equal(t, "a", got[0].Owner.ID)
	assert.Equal(t, originSource, got[0].origin)
	assert.Equal(t, [2]time.Time{at(0), at(4)}, span(got[0]))
	assert.Equal(t, "c", got[1].Owner.ID)
	assert.Equal(t, [2]time.Time{at(4), at(10)}, span(got[1]), "never claims before the owner was known")
	// 10.0.0.2 did not change: its since is kept across the rebuild.
	assert.Equal(t, "b", got[2].Owner.ID)
	assert.Equal(t, [2]time.Time{at(0), at(10)}, span(got[2]))
}

func TestHeartbeatsClockStepsBack(t *testing.T) {
	clock := newManualClock(at(0))
	own := newOwnership([]ownershipSource{newMapSource("m", "10.0.0.1", "a")}, clock.Now, clock.Boot, zap.NewNop())
	hb := newHeartbeats("n", at(10))
	assert.Empty(t, hb.claims(at(5), own), "no claim that ends before it starts")
	got := hb.claims(at(15), own)
	require.Len(t, got, 1)
	assert.Equal(t, [2]time.Time{at(5), at(15)}, span(got[0]))
}

func TestOwnershipPrecedenceAndLongestPrefix(t *testing.T) {
	clock := newManualClock(at(0))
	file := newMapSource(sourceFile, "10.0.0.1", "from-file", "10.0.0.0/8", "file-wide")
	static := newMapSource(sourceStatic, "10.0.0.1", "from-static", "10.1.2.0/24", "static-narrow", "10.9.9.9", "static-only")
	own := newOwnership([]ownershipSource{file, static}, clock.Now, clock.Boot, zap.NewNop())
	lookup := func(s string) string {
		e, ok := own.snapshot().lookup(netip.MustParseAddr(s))
		if !ok {
			return ""
		}
		return e.owner.ID
	}
	assert.Equal(t, "from-file", lookup("10.0.0.1"), "same prefix: first in precedence wins")
	assert.Equal(t, "static-narrow", lookup("10.1.2.3"), "longest prefix wins whatever the source")
	assert.Equal(t, "file-wide", lookup("10.200.0.1"))
	assert.Equal(t, "static-only", lookup("10.9.9.9"))
	assert.Empty(t, lookup("192.0.2.1"))

	own = newOwnership([]ownershipSource{static, file}, clock.Now, clock.Boot, zap.NewNop())
	e, _ := own.snapshot().lookup(netip.MustParseAddr("10.0.0.1"))
	assert.Equal(t, "from-static", e.owner.ID)
}

func TestOwnershipRenewsPrefixesAroundRemovedOne(t *testing.T) {
	clock, src, own := startOwnership(t, 0,
		"10.0.0.0/16", "wide", "10.0.1.0/24", "pool", "10.0.1.5", "x", "10.0.1.64/26", "sub",
		"10.0.2.0/24", "other", "10.0.3.7", "y")
	entry := func(addr string) *ownerEntry {
		e, ok := own.snapshot().lookup(netip.MustParseAddr(addr))
		require.True(t, ok, addr)
		return e
	}
	assert.True(t, entry("10.0.1.5").knownFrom(at(-1), bootAt(-1)), "entries made before capture predate every flow")

	clock.Set(at(10))
	src.set("10.0.0.0/16", "wide", "10.0.1.0/24", "pool", "10.0.1.64/26", "sub",
		"10.0.2.0/24", "other", "10.0.3.7", "y2")
	own.rebuild()

	// 10.0.1.5 falls back to the /24: pool's only from now on, and so,
	// conservatively, every address of the /24 and of the /16 around it.
	for _, addr := range []string{"10.0.1.5", "10.0.1.9", "10.0.9.9"} {
		e := entry(addr)
		assert.Equal(t, at(10), e.since, addr)
		assert.False(t, e.knownFrom(at(9), bootAt(9)), addr)
		assert.True(t, e.knownFrom(at(10), bootAt(10)), addr)
	}
	assert.Equal(t, "pool", entry("10.0.1.5").owner.ID)
	// Prefixes that neither contain the removed one nor changed keep their
	// entries.
	for _, addr := range []string{"10.0.1.70", "10.0.2.1"} {
		assert.True(t, entry(addr).knownFrom(at(-1), bootAt(-1)), addr)
	}
	// A changed owner is known from the rebuild; the entry is not initial.
	assert.Equal(t, at(10), entry("10.0.3.7").since)
	assert.False(t, entry("10.0.3.7").knownFrom(at(9), bootAt(9)))

	// A renewed entry keeps its renewal time across unchanged rebuilds.
	clock.Set(at(20))
	own.rebuild()
	assert.Equal(t, at(10), entry("10.0.1.5").since)
}

func TestHeartbeatsAddressFallsBackToCoveringPrefix(t *testing.T) {
	clock, src, own := startOwnership(t, 0, "10.0.1.0/24", "pool", "10.0.1.5", "x")
	hb := newHeartbeats("node-1", at(0))
	a := netip.MustParseAddr("10.0.1.5")

	rebuildAt(clock, src, own, 4, "10.0.1.0/24", "pool")
	e, _ := own.snapshot().lookup(a)
	require.Equal(t, "pool", e.owner.ID)
	hb.observe(a, e, at(2), at(6)) // started while x held the address

	got := hb.claims(at(10), own)
	require.Len(t, got, 2)
	assert.Equal(t, "x", got[0].Owner.ID)
	assert.Equal(t, [2]time.Time{at(0), at(4)}, span(got[0]), "x held the address until it was removed")
	assert.Equal(t, "pool", got[1].Owner.ID)
	assert.Equal(t, originSource, got[1].origin, "the fallback's claim covers the flow")
	assert.Equal(t, [2]time.Time{at(4), at(10)}, span(got[1]), "pool never claims the address before it fell back to it")
}

// After the wall clock steps back, entries carried over are dated ahead of
// the rebuild: a prefix that a removed one falls back to is renewed all the
// same, or a flow of the removed prefix's owner would be stamped with the
// wider prefix's owner.
func TestOwnershipRenewsPrefixesAfterTheClockStepsBack(t *testing.T) {
	clock, src, own := startOwnership(t, 100, "10.0.1.0/24", "pool", "10.0.1.5", "x")

	rebuildAt(clock, src, own, 50, "10.0.1.0/24", "pool")
	e, ok := own.snapshot().lookup(netip.MustParseAddr("10.0.1.5"))
	require.True(t, ok)
	assert.Equal(t, "pool", e.owner.ID)
	assert.False(t, e.knownFrom(at(40), bootAt(40)), "a flow of x's time must not be pool's")
	assert.Equal(t, at(50), e.since)
}

// An owner's flows on either side of another owner's tenure of the address
// are claimed apart, each from its own entry's since: one claim spanning both
// would cover the other owner's tenure. That tenure, begun and ended within
// the interval, is claimed too: without it the processor could bridge the
// two claims across it.
func TestHeartbeatsKeepOneOwnersTenuresApart(t *testing.T) {
	clock, src, own := startOwnership(t, 0, "10.0.1.0/24", "pool")
	hb := newHeartbeats("node-1", at(0))
	a := netip.MustParseAddr("10.0.1.5")
	observe := func(start, end float64) {
		e, ok := own.snapshot().lookup(a)
		require.True(t, ok)
		require.Equal(t, "pool", e.owner.ID)
		hb.observe(a, e, at(start), at(end))
	}
	observe(1, 2)
	rebuildAt(clock, src, own, 3, "10.0.1.0/24", "pool", "10.0.1.5", "x")
	rebuildAt(clock, src, own, 7, "10.0.1.0/24", "pool")
	observe(8, 9)

	spans := map[string][][2]time.Time{}
	for _, c := range hb.claims(at(10), own) {
		spans[c.Owner.ID] = append(spans[c.Owner.ID], span(c))
	}
	assert.Equal(t, [][2]time.Time{{at(1), at(2)}, {at(7), at(10)}}, spans["pool"], "pool's claims leave x's tenure, 3 s to 7 s, out")
	assert.Equal(t, [][2]time.Time{{at(3), at(7)}}, spans["x"], "x's tenure is claimed")
}

// A single address claimed periodically and then removed, or given to
// another owner, mid-interval is claimed for its owner until the change.
func TestHeartbeatsClaimAddressesRetiredMidInterval(t *testing.T) {
	clock, src, own := startOwnership(t, 0, "10.0.0.1", "a", "10.0.0.2", "b")
	hb := newHeartbeats("node-1", at(0))
	require.Len(t, hb.claims(at(10), own), 2)

	rebuildAt(clock, src, own, 13, "10.0.0.2", "c")
	got := hb.claims(at(20), own)
	require.Len(t, got, 3)
	for i, want := range []struct {
		addr, owner string
		span        [2]time.Time
	}{
		{"10.0.0.1", "a", [2]time.Time{at(10), at(13)}},
		{"10.0.0.2", "b", [2]time.Time{at(10), at(13)}},
		{"10.0.0.2", "c", [2]time.Time{at(13), at(20)}},
	} {
		assert.Equal(t, want.addr, got[i].Address.String(), i)
		assert.Equal(t, want.owner, got[i].Owner.ID, i)
		assert.Equal(t, want.span, span(got[i]), i)
		assert.Equal(t, originSource, got[i].origin, i)
	}
	require.Len(t, hb.claims(at(30), own), 1, "a retired address is claimed once")
}

// The addresses retired in one interval are bounded; beyond the bound they
// are dropped with one warning per interval.
func TestOwnershipBoundsRetiredAddresses(t *testing.T) {
	clock := newManualClock(at(0))
	src := newMapSource("m", "10.0.0.1", "a", "10.0.0.2", "b", "10.0.0.3", "c")
	core, logs := observer.New(zap.WarnLevel)
	own := newOwnership([]ownershipSource{src}, clock.Now, clock.Boot, zap.New(core))
	own.maxRetired = 2
	hb := newHeartbeats("node-1", at(0))

	rebuildAt(clock, src, own, 5)
	assert.Len(t, hb.claims(at(10), own), 2)
	require.Equal(t, 1, logs.Len())
	assert.Equal(t, int64(1), logs.All()[0].ContextMap()["dropped"])

	assert.Empty(t, hb.claims(at(20), own))
	assert.Equal(t, 1, logs.Len(), "no warning for an interval that dropped nothing")
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
	hs := &hookSource{mapSource: newMapSource("m", "10.0.0.1", "a")}
	own := newOwnership([]ownershipSource{hs}, clock.Now, clock.Boot, zap.NewNop())
	require.NoError(t, own.start(context.Background()))
	hb := newHeartbeats("n", at(0))
	addr := netip.MustParseAddr("10.0.0.1")
	var stampedDuringMerge string
	hs.hook = func() { // the merge runs from 10 s to 10.5 s
		clock.Set(at(10.5))
		if e, _ := own.snapshot().lookup(addr); e.knownFrom(at(10.2), bootAt(10.2)) {
			stampedDuringMerge = e.owner.ID
		}
	}
	clock.Set(at(10))
	hs.set("10.0.0.1", "b")
	own.rebuild()
	hs.hook = nil

	spans := map[string][2]time.Time{}
	for _, c := range hb.claims(at(20), own) {
		spans[c.Owner.ID] = span(c)
	}
	assert.Equal(t, "a", stampedDuringMerge, "readers see a until the rebuild publishes b")
	assert.Equal(t, map[string][2]time.Time{"a": {at(0), at(10.5)}, "b": {at(10.5), at(20)}}, spans,
		"a held the address until the rebuild published b, b from then")
}

// closeInterval, which the emitter calls at every heartbeat, does not wait
// for a rebuild's merge, which can take long for a large file.
func TestCloseIntervalDoesNotWaitForARebuild(t *testing.T) {
	clock := newManualClock(at(0))
	hs := &hookSource{mapSource: newMapSource("m", "10.0.0.1", "a")}
	own := newOwnership([]ownershipSource{hs}, clock.Now, clock.Boot, zap.NewNop())
	require.NoError(t, own.start(context.Background()))
	merging, finish := make(chan struct{}), make(chan struct{})
	hs.hook = func() {
		close(merging)
		<-finish
	}
	rebuilt := make(chan struct{})
	go func() {
		own.rebuild()
		close(rebuilt)
	}()
	<-merging
	closed := make(chan struct{})
	go func() {
		own.closeInterval(at(1))
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Error("closeInterval waited for the rebuild")
	}
	close(finish)
	<-rebuilt
}

// ownerSpan is a claim's owner, span and origin.
type ownerSpan struct {
	owner  string
	from   float64
	to     float64
	origin string
}

// spansOf returns the claims of addr in got, in order.
func spansOf(got []claim, addr string) []ownerSpan {
	var out []ownerSpan
	for _, c := range got {
		if c.Address.String() == addr {
			out = append(out, ownerSpan{c.Owner.ID, c.Start.Sub(t0).Seconds(), c.End.Sub(t0).Seconds(), c.origin})
		}
	}
	return out
}

// An address whose own entry is removed falls back to the wider prefix's
// owner, which is claimed for it: when the address returns to its owner
// within merge_gap, the processor must not join that owner's claims across
// the wider owner's tenure.
func TestHeartbeatsClaimTheFallbackOfARemovedAddress(t *testing.T) {
	clock, src, own := startOwnership(t, 0, "10.0.1.0/24", "pool", "10.0.1.5", "x")
	hb := newHeartbeats("node-1", at(0))
	rebuildAt(clock, src, own, 3, "10.0.1.0/24", "pool")
	rebuildAt(clock, src, own, 5, "10.0.1.0/24", "pool", "10.0.1.5", "x")

	assert.Equal(t, []ownerSpan{
		{"x", 0, 3, originSource},
		{"pool", 3, 5, originSource},
		{"x", 5, 10, originSource},
	}, spansOf(hb.claims(at(10), own), "10.0.1.5"))
	assert.Empty(t, own.snapshot().fallbacks, "the address has its own entry again")
	assert.Equal(t, []ownerSpan{{"x", 10, 20, originSource}}, spansOf(hb.claims(at(20), own), "10.0.1.5"))
}

// A fallback is claimed periodically, like a single address, and kept by
// rebuilds that leave its entry alone; it ends, claimed up to then, when the
// address gets its own entry again.
func TestHeartbeatsClaimAFallbackUntilTheAddressReturns(t *testing.T) {
	clock, src, own := startOwnership(t, 0, "10.0.1.0/24", "pool", "10.0.1.5", "x", "10.0.2.0/24", "other")
	hb := newHeartbeats("node-1", at(0))
	rebuildAt(clock, src, own, 3, "10.0.1.0/24", "pool", "10.0.2.0/24", "other")
	assert.Equal(t, []ownerSpan{{"x", 0, 3, originSource}, {"pool", 3, 10, originSource}},
		spansOf(hb.claims(at(10), own), "10.0.1.5"))

	clock.Set(at(12))
	src.set("10.0.1.0/24", "pool", "10.0.2.0/24", "other2") // another prefix changes
	own.rebuild()
	assert.Equal(t, []ownerSpan{{"pool", 10, 20, originSource}}, spansOf(hb.claims(at(20), own), "10.0.1.5"))

	rebuildAt(clock, src, own, 24, "10.0.1.0/24", "pool", "10.0.2.0/24", "other2", "10.0.1.5", "x")
	assert.Equal(t, []ownerSpan{{"pool", 20, 24, originSource}, {"x", 24, 30, originSource}},
		spansOf(hb.claims(at(30), own), "10.0.1.5"))
	assert.Equal(t, []ownerSpan{{"x", 30, 40, originSource}}, spansOf(hb.claims(at(40), own), "10.0.1.5"))
}

// A fallback is claimed for fallbackClaimFor only, up to then in the
// interval it ends in; flows seen later are claimed as flows. A rebuild
// after the claim up to the end forgets it.
func TestHeartbeatsClaimAFallbackForFallbackClaimFor(t *testing.T) {
	require.Greater(t, fallbackClaimFor, 30*time.Second, "longer than the default merge_gap")
	end := 3 + fallbackClaimFor.Seconds()
	clock, src, own := startOwnership(t, 0, "10.0.1.0/24", "pool", "10.0.1.5", "x")
	hb := newHeartbeats("node-1", at(0))
	a := netip.MustParseAddr("10.0.1.5")
	rebuildAt(clock, src, own, 3, "10.0.1.0/24", "pool")
	assert.Equal(t, []ownerSpan{{"x", 0, 3, originSource}, {"pool", 3, end - 3, originSource}},
		spansOf(hb.claims(at(end-3), own), "10.0.1.5"))

	clock.Set(at(end + 5))
	e, _ := own.snapshot().lookup(a)
	hb.observe(a, e, at(end+2), at(end+4))
	assert.Equal(t, []ownerSpan{{"pool", end - 3, end, originSource}, {"pool", end + 2, end + 4, originFlow}},
		spansOf(hb.claims(at(end+7), own), "10.0.1.5"))
	assert.Empty(t, hb.claims(at(end+17), own))

	clock.Set(at(end + 20))
	own.rebuild()
	assert.Empty(t, own.snapshot().fallbacks, "claimed up to its end: forgotten")
	rebuildAt(clock, src, own, end+22, "10.0.1.0/24", "pool", "10.0.1.5", "x")
	assert.Equal(t, []ownerSpan{{"x", end + 22, end + 27, originSource}}, spansOf(hb.claims(at(end+27), own), "10.0.1.5"))
}

// A fallback whose entry is replaced follows the address to its new wider
// prefix, as a new fallback claimed from then; it keeps its start when the
// owner is the same. It ends when the address resolves to no owner.
func TestHeartbeatsFallbackFollowsTheAddress(t *testing.T) {
	clock, src, own := startOwnership(t, 0, "10.0.0.0/16", "wide", "10.0.1.0/24", "pool", "10.0.1.5", "x", "10.0.1.7", "y")
	hb := newHeartbeats("node-1", at(0))
	a := netip.MustParseAddr("10.0.1.5")
	rebuildAt(clock, src, own, 3, "10.0.0.0/16", "wide", "10.0.1.0/24", "pool", "10.0.1.7", "y")
	hb.claims(at(10), own)

	rebuildAt(clock, src, own, 13, "10.0.0.0/16", "wide", "10.0.1.0/24", "pool2", "10.0.1.7", "y") // the /24's owner changes
	assert.Equal(t, []ownerSpan{{"pool", 10, 13, originSource}, {"pool2", 13, 20, originSource}},
		spansOf(hb.claims(at(20), own), "10.0.1.5"))
	assert.Equal(t, at(13), own.snapshot().fallbacks[a].started)

	rebuildAt(clock, src, own, 23, "10.0.0.0/16", "wide", "10.0.1.0/24", "pool2") // y removed: the /24 gets a new entry of the same owner
	assert.Equal(t, []ownerSpan{{"pool2", 20, 30, originSource}},
		spansOf(hb.claims(at(30), own), "10.0.1.5"), "one tenure, one claim: no retired claim spent on it")
	assert.Equal(t, at(13), own.snapshot().fallbacks[a].started, "the same owner: still claimed until 10 minutes after 13 s")
	assert.Equal(t, at(23), own.snapshot().fallbacks[netip.MustParseAddr("10.0.1.7")].started)

	rebuildAt(clock, src, own, 33, "10.0.0.0/16", "wide") // the /24 removed: the address falls back to the /16
	assert.Equal(t, []ownerSpan{{"pool2", 30, 33, originSource}, {"wide", 33, 40, originSource}},
		spansOf(hb.claims(at(40), own), "10.0.1.5"))
	assert.Equal(t, at(33), own.snapshot().fallbacks[a].started)

	rebuildAt(clock, src, own, 43) // no owner left
	assert.Equal(t, []ownerSpan{{"wide", 40, 43, originSource}}, spansOf(hb.claims(at(50), own), "10.0.1.5"))
	assert.Empty(t, own.snapshot().fallbacks)
	assert.Empty(t, hb.claims(at(60), own))
}

// The fallbacks of a snapshot are bounded; beyond the bound no more are
// made, with one warning per interval that dropped some.
func TestOwnershipBoundsFallbacks(t *testing.T) {
	clock := newManualClock(at(0))
	src := newMapSource("m", "10.0.1.0/24", "pool", "10.0.1.1", "a", "10.0.1.2", "b", "10.0.1.3", "c")
	core, logs := observer.New(zap.WarnLevel)
	own := newOwnership([]ownershipSource{src}, clock.Now, clock.Boot, zap.New(core))
	require.NoError(t, own.start(context.Background()))
	own.maxFallbacks = 2
	hb := newHeartbeats("node-1", at(0))

	rebuildAt(clock, src, own, 5, "10.0.1.0/24", "pool")
	pool := 0
	for _, c := range hb.claims(at(10), own) {
		if c.Owner.ID == "pool" {
			pool++
			assert.Equal(t, [2]time.Time{at(5), at(10)}, span(c))
		}
	}
	assert.Equal(t, 2, pool)
	require.Equal(t, 1, logs.Len())
	assert.Equal(t, int64(2), logs.All()[0].ContextMap()["claimed"])
	assert.Equal(t, int64(1), logs.All()[0].ContextMap()["dropped"])

	clock.Set(at(15))
	own.rebuild()
	assert.Len(t, hb.claims(at(20), own), 2, "the fallbacks kept are claimed on")
	assert.Equal(t, 1, logs.Len(), "no warning for an interval that dropped nothing")
}

// Renewing a wider prefix (a narrower one inside it went away) does not end
// the fallbacks under it: the owner did not change, and their claims do not
// use up the retired budget that real changes need.
func TestFallbackRenewalsDoNotSpendTheRetiredBudget(t *testing.T) {
	clock, src, own := startOwnership(t, 0, "10.0.1.0/24", "pool",
		"10.0.1.1", "a", "10.0.1.2", "b", "10.0.1.3", "c", "10.0.1.4", "d",
		"10.0.1.6", "w", "10.0.2.9", "z")
	own.maxRetired = 5 // stands for 65536
	hb := newHeartbeats("n", at(0))
	rebuildAt(clock, src, own, 1, "10.0.1.0/24", "pool", "10.0.1.6", "w", "10.0.2.9", "z") // four fallbacks to the /24
	hb.claims(at(10), own)
	rebuildAt(clock, src, own, 12, "10.0.1.0/24", "pool", "10.0.2.9", "z") // w goes: the /24 is renewed
	rebuildAt(clock, src, own, 13, "10.0.1.0/24", "pool", "10.0.2.9", "z2")
	rebuildAt(clock, src, own, 14, "10.0.1.0/24", "pool", "10.0.2.9", "z")
	assert.Equal(t, []ownerSpan{{"z", 10, 13, originSource}, {"z2", 13, 14, originSource}, {"z", 14, 20, originSource}},
		spansOf(hb.claims(at(20), own), "10.0.2.9"))
}

// At maxFallbacks the newest fallbacks are kept: an old one no longer keeps
// the processor from joining claims across it.
func TestFallbackBoundKeepsTheNewest(t *testing.T) {
	clock, src, own := startOwnership(t, 0, "10.0.1.0/24", "pool", "10.0.1.1", "a", "10.0.1.2", "b")
	own.maxFallbacks = 1
	hb := newHeartbeats("n", at(0))
	rebuildAt(clock, src, own, 1, "10.0.1.0/24", "pool", "10.0.1.2", "b")
	for s := 10.0; s <= 120; s += 10 {
		hb.claims(at(s), own)
	}
	rebuildAt(clock, src, own, 121, "10.0.1.0/24", "pool")
	rebuildAt(clock, src, own, 125, "10.0.1.0/24", "pool", "10.0.1.2", "b") // b back within merge_gap
	assert.Equal(t, []ownerSpan{{"b", 120, 121, originSource}, {"pool", 121, 125, originSource}, {"b", 125, 130, originSource}},
		spansOf(hb.claims(at(130), own), "10.0.1.2"))
}

// After the wall clock steps back, a live fallback is not taken for one an
// interval closed past already.
func TestFallbackSurvivesAStepBack(t *testing.T) {
	clock, src, own := startOwnership(t, 2000, "10.0.1.0/24", "pool", "10.0.1.5", "x", "10.0.9.9", "q")
	hb := newHeartbeats("n", at(2000))
	hb.claims(at(2010), own)
	rebuildAt(clock, src, own, 100, "10.0.1.0/24", "pool", "10.0.9.9", "q")
	rebuildAt(clock, src, own, 101, "10.0.1.0/24", "pool", "10.0.9.9", "q2")
	assert.Contains(t, own.snapshot().fallbacks, netip.MustParseAddr("10.0.1.5"))
}

// startOwnership starts an ownership of one map source holding kv (see
// mapSource.set), on a manual clock at start seconds.
func startOwnership(t *testing.T, start float64, kv ...string) (*manualClock, *mapSource, *ownership) {
	t.Helper()
	clock := newManualClock(at(start))
	src := newMapSource("m", kv...)
	own := newOwnership([]ownershipSource{src}, clock.Now, clock.Boot, zap.NewNop())
	require.NoError(t, own.start(context.Background()))
	return clock, src, own
}

// rebuildAt sets src to kv at seconds and rebuilds own.
func rebuildAt(clock *manualClock, src *mapSource, own *ownership, seconds float64, kv ...string) {
	clock.Set(at(seconds))
	src.set(kv...)
	own.rebuild()
}
