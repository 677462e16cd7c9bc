package localowner

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
)

func TestClaimerPeriodicClaimsTouch(t *testing.T) {
	clock := newManualClock(at(0))
	own := New([]Source{newMapSource("10.0.0.1", "a", "10.0.1.0/24", "pool")}, clockSettings(clock))
	claimer := NewClaimer(own, "node-1", at(0))

	first := claimer.CloseInterval(at(10))
	require.Len(t, first, 1, "only the single address is claimed without traffic, not the /24")
	assert.Equal(t, flowschema.Claim{Address: netip.MustParseAddr("10.0.0.1"), Owner: owners.Owner{ID: "a"}, Start: at(0), End: at(10), Sender: "node-1"}, first[0].Claim)
	assert.Equal(t, BasisSource, first[0].Basis)

	second := claimer.CloseInterval(at(20))
	require.Len(t, second, 1)
	assert.Equal(t, [2]time.Time{at(10), at(20)}, span(second[0]), "consecutive claims touch")
}

func TestClaimerAggregatesFlows(t *testing.T) {
	clock := newManualClock(at(0))
	own := New([]Source{newMapSource("10.0.0.1", "a", "10.0.1.0/24", "pool")}, clockSettings(clock))
	claimer := NewClaimer(own, "node-1", at(0))
	claimer.CloseInterval(at(10)) // the interval is now [10, 20]

	observe := func(addr string, start, end float64) {
		claimer.Observe(netip.MustParseAddr(addr), lookup(t, own, addr), at(start), at(end))
	}
	observe("10.0.1.5", 12, 13)
	observe("10.0.1.5", 14, 18)
	observe("10.0.1.5", 11.5, 12) // earliest start
	observe("10.0.1.6", 3, 15)    // started before the interval: clamped
	observe("10.0.0.1", 12, 13)   // covered by the periodic claim

	got := claimer.CloseInterval(at(20))
	require.Len(t, got, 3, "one claim per (address, owner), not one per flow")
	assert.Equal(t, "10.0.0.1", got[0].Address.String())
	assert.Equal(t, BasisSource, got[0].Basis)
	assert.Equal(t, [2]time.Time{at(10), at(20)}, span(got[0]))

	assert.Equal(t, "10.0.1.5", got[1].Address.String())
	assert.Equal(t, BasisFlow, got[1].Basis)
	assert.Equal(t, "pool", got[1].Owner.ID)
	assert.Equal(t, [2]time.Time{at(11.5), at(18)}, span(got[1]))

	assert.Equal(t, "10.0.1.6", got[2].Address.String())
	assert.Equal(t, [2]time.Time{at(10), at(15)}, span(got[2]), "bounded to the interval")

	assert.Len(t, claimer.CloseInterval(at(30)), 1, "flows are forgotten once claimed")
}

func TestClaimerOwnerChangeMidInterval(t *testing.T) {
	clock, src, own := startOwnership(t, 0, "10.0.0.1", "a", "10.0.0.2", "b")
	claimer := NewClaimer(own, "node-1", at(0))
	a1 := netip.MustParseAddr("10.0.0.1")
	claimer.Observe(a1, lookup(t, own, "10.0.0.1"), at(1), at(2))

	rebuildAt(clock, src, 4, "10.0.0.1", "c", "10.0.0.2", "b")
	claimer.Observe(a1, lookup(t, own, "10.0.0.1"), at(3), at(6)) // started before the change was known

	got := claimer.CloseInterval(at(10))
	require.Len(t, got, 3)
	// 10.0.0.1: a until the change was loaded (its flow within that), then
	// c from then on.
	assert.Equal(t, "a", got[0].Owner.ID)
	assert.Equal(t, BasisSource, got[0].Basis)
	assert.Equal(t, [2]time.Time{at(0), at(4)}, span(got[0]))
	assert.Equal(t, "c", got[1].Owner.ID)
	assert.Equal(t, [2]time.Time{at(4), at(10)}, span(got[1]), "never claims before the owner was known")
	// 10.0.0.2 did not change: its since is kept across the rebuild.
	assert.Equal(t, "b", got[2].Owner.ID)
	assert.Equal(t, [2]time.Time{at(0), at(10)}, span(got[2]))
}

func TestClaimerClockStepsBack(t *testing.T) {
	clock := newManualClock(at(0))
	own := New([]Source{newMapSource("10.0.0.1", "a")}, clockSettings(clock))
	claimer := NewClaimer(own, "n", at(10))
	assert.Empty(t, claimer.CloseInterval(at(5)), "no claim that ends before it starts")
	got := claimer.CloseInterval(at(15))
	require.Len(t, got, 1)
	assert.Equal(t, [2]time.Time{at(5), at(15)}, span(got[0]))
}

// An owner's flows on either side of another owner's tenure of the address
// are claimed apart, each from its own entry's since: one claim spanning both
// would cover the other owner's tenure. That tenure, begun and ended within
// the interval, is claimed too: without it the processor could bridge the
// two claims across it.
func TestClaimerKeepsOneOwnersTenuresApart(t *testing.T) {
	clock, src, own := startOwnership(t, 0, "10.0.1.0/24", "pool")
	claimer := NewClaimer(own, "node-1", at(0))
	a := netip.MustParseAddr("10.0.1.5")
	observe := func(start, end float64) {
		e := lookup(t, own, "10.0.1.5")
		require.Equal(t, "pool", e.Owner().ID)
		claimer.Observe(a, e, at(start), at(end))
	}
	observe(1, 2)
	rebuildAt(clock, src, 3, "10.0.1.0/24", "pool", "10.0.1.5", "x")
	rebuildAt(clock, src, 7, "10.0.1.0/24", "pool")
	observe(8, 9)

	spans := map[string][][2]time.Time{}
	for _, c := range claimer.CloseInterval(at(10)) {
		spans[c.Owner.ID] = append(spans[c.Owner.ID], span(c))
	}
	assert.Equal(t, [][2]time.Time{{at(1), at(2)}, {at(7), at(10)}}, spans["pool"], "pool's claims leave x's tenure, 3 s to 7 s, out")
	assert.Equal(t, [][2]time.Time{{at(3), at(7)}}, spans["x"], "x's tenure is claimed")
}

// A single address claimed periodically and then removed, or given to
// another owner, mid-interval is claimed for its owner until the change.
func TestClaimerClaimsAddressesRetiredMidInterval(t *testing.T) {
	clock, src, own := startOwnership(t, 0, "10.0.0.1", "a", "10.0.0.2", "b")
	claimer := NewClaimer(own, "node-1", at(0))
	require.Len(t, claimer.CloseInterval(at(10)), 2)

	rebuildAt(clock, src, 13, "10.0.0.2", "c")
	got := claimer.CloseInterval(at(20))
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
		assert.Equal(t, BasisSource, got[i].Basis, i)
	}
	require.Len(t, claimer.CloseInterval(at(30)), 1, "a retired address is claimed once")
}
