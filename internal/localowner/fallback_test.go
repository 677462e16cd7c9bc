package localowner

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestClaimerAddressFallsBackToCoveringPrefix(t *testing.T) {
	clock, src, own := startOwnership(t, 0, "10.0.1.0/24", "pool", "10.0.1.5", "x")
	claimer := NewClaimer(own, "node-1", at(0))

	rebuildAt(clock, src, 4, "10.0.1.0/24", "pool")
	e := lookup(t, own, "10.0.1.5")
	require.Equal(t, "pool", e.Owner().ID)
	claimer.Observe(netip.MustParseAddr("10.0.1.5"), e, at(2), at(6)) // started while x held the address

	got := claimer.CloseInterval(at(10))
	require.Len(t, got, 2)
	assert.Equal(t, "x", got[0].Owner.ID)
	assert.Equal(t, [2]time.Time{at(0), at(4)}, span(got[0]), "x held the address until it was removed")
	assert.Equal(t, "pool", got[1].Owner.ID)
	assert.Equal(t, BasisSource, got[1].Basis, "the fallback's claim covers the flow")
	assert.Equal(t, [2]time.Time{at(4), at(10)}, span(got[1]), "pool never claims the address before it fell back to it")
}

// An address whose own entry is removed falls back to the wider prefix's
// owner, which is claimed for it: when the address returns to its owner
// within merge_gap, the processor must not join that owner's claims across
// the wider owner's tenure.
func TestClaimerClaimsTheFallbackOfARemovedAddress(t *testing.T) {
	clock, src, own := startOwnership(t, 0, "10.0.1.0/24", "pool", "10.0.1.5", "x")
	claimer := NewClaimer(own, "node-1", at(0))
	rebuildAt(clock, src, 3, "10.0.1.0/24", "pool")
	rebuildAt(clock, src, 5, "10.0.1.0/24", "pool", "10.0.1.5", "x")

	assert.Equal(t, []ownerSpan{
		{"x", 0, 3, BasisSource},
		{"pool", 3, 5, BasisSource},
		{"x", 5, 10, BasisSource},
	}, spansOf(claimer.CloseInterval(at(10)), "10.0.1.5"))
	next := spansOf(claimer.CloseInterval(at(20)), "10.0.1.5")
	assert.NotContains(t, ownerIDsOf(next), "pool", "the address has its own entry again: no fallback is claimed")
	assert.Equal(t, []ownerSpan{{"x", 10, 20, BasisSource}}, next)
}

// ownerIDsOf returns the owner IDs of spans.
func ownerIDsOf(spans []ownerSpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.owner)
	}
	return out
}

// A fallback is claimed periodically, like a single address, and kept by
// rebuilds that leave its entry alone; it ends, claimed up to then, when the
// address gets its own entry again.
func TestClaimerClaimsAFallbackUntilTheAddressReturns(t *testing.T) {
	clock, src, own := startOwnership(t, 0, "10.0.1.0/24", "pool", "10.0.1.5", "x", "10.0.2.0/24", "other")
	claimer := NewClaimer(own, "node-1", at(0))
	rebuildAt(clock, src, 3, "10.0.1.0/24", "pool", "10.0.2.0/24", "other")
	assert.Equal(t, []ownerSpan{{"x", 0, 3, BasisSource}, {"pool", 3, 10, BasisSource}},
		spansOf(claimer.CloseInterval(at(10)), "10.0.1.5"))

	rebuildAt(clock, src, 12, "10.0.1.0/24", "pool", "10.0.2.0/24", "other2") // another prefix changes
	assert.Equal(t, []ownerSpan{{"pool", 10, 20, BasisSource}}, spansOf(claimer.CloseInterval(at(20)), "10.0.1.5"))

	rebuildAt(clock, src, 24, "10.0.1.0/24", "pool", "10.0.2.0/24", "other2", "10.0.1.5", "x")
	assert.Equal(t, []ownerSpan{{"pool", 20, 24, BasisSource}, {"x", 24, 30, BasisSource}},
		spansOf(claimer.CloseInterval(at(30)), "10.0.1.5"))
	assert.Equal(t, []ownerSpan{{"x", 30, 40, BasisSource}}, spansOf(claimer.CloseInterval(at(40)), "10.0.1.5"))
}

// A fallback is claimed for fallbackClaimFor only, up to then in the
// interval it ends in; flows seen later are claimed as flows. A rebuild
// after the claim up to the end forgets it.
func TestClaimerClaimsAFallbackForFallbackClaimFor(t *testing.T) {
	require.Greater(t, fallbackClaimFor, 30*time.Second, "longer than the default merge_gap")
	end := 3 + fallbackClaimFor.Seconds()
	clock := newManualClock(at(0))
	core, logs := observer.New(zap.WarnLevel)
	set := clockSettings(clock)
	set.Logger = zap.New(core)
	set.MaxFallbacks = 1 // to see that the fallback is forgotten
	src, own := startOwnershipWith(t, set, "10.0.1.0/24", "pool", "10.0.1.5", "x")
	claimer := NewClaimer(own, "node-1", at(0))
	a := netip.MustParseAddr("10.0.1.5")
	rebuildAt(clock, src, 3, "10.0.1.0/24", "pool")
	assert.Equal(t, []ownerSpan{{"x", 0, 3, BasisSource}, {"pool", 3, end - 3, BasisSource}},
		spansOf(claimer.CloseInterval(at(end-3)), "10.0.1.5"))

	clock.Set(at(end + 5))
	claimer.Observe(a, lookup(t, own, "10.0.1.5"), at(end+2), at(end+4))
	assert.Equal(t, []ownerSpan{{"pool", end - 3, end, BasisSource}, {"pool", end + 2, end + 4, BasisFlow}},
		spansOf(claimer.CloseInterval(at(end+7)), "10.0.1.5"))
	assert.Empty(t, claimer.CloseInterval(at(end+17)))

	// Claimed up to its end: forgotten. It no longer takes the one place
	// under MaxFallbacks, which another address's fallback gets without
	// any being dropped.
	rebuildAt(clock, src, end+20, "10.0.1.0/24", "pool", "10.0.1.6", "w")
	rebuildAt(clock, src, end+21, "10.0.1.0/24", "pool")
	assert.Equal(t, []ownerSpan{{"w", end + 20, end + 21, BasisSource}, {"pool", end + 21, end + 21.5, BasisSource}},
		spansOf(claimer.CloseInterval(at(end+21.5)), "10.0.1.6"))
	assert.Zero(t, logs.Len(), "no fallback dropped")

	rebuildAt(clock, src, end+22, "10.0.1.0/24", "pool", "10.0.1.5", "x")
	assert.Equal(t, []ownerSpan{{"x", end + 22, end + 27, BasisSource}}, spansOf(claimer.CloseInterval(at(end+27)), "10.0.1.5"))
}

// A fallback whose entry is replaced follows the address to its new wider
// prefix, as a new fallback claimed from then; it keeps its start when the
// owner is the same. It ends when the address resolves to no owner.
func TestClaimerFallbackFollowsTheAddress(t *testing.T) {
	const a, y = "10.0.1.5", "10.0.1.7"
	changes := []struct {
		at float64
		kv []string
	}{
		{3, []string{"10.0.0.0/16", "wide", "10.0.1.0/24", "pool", y, "y"}},   // x removed: a falls back to the /24
		{13, []string{"10.0.0.0/16", "wide", "10.0.1.0/24", "pool2", y, "y"}}, // the /24's owner changes
		{23, []string{"10.0.0.0/16", "wide", "10.0.1.0/24", "pool2"}},         // y removed: the /24 gets a new entry of the same owner
		{33, []string{"10.0.0.0/16", "wide"}},                                 // the /24 removed: a falls back to the /16
		{43, nil},                                                             // no owner left
	}
	// replay plays the changes and closes an interval every 10 s up to
	// the close at upTo, returning each close's claims of a.
	replay := func(upTo float64) (*Claimer, [][]ownerSpan) {
		clock, src, own := startOwnership(t, 0, "10.0.0.0/16", "wide", "10.0.1.0/24", "pool", a, "x", y, "y")
		claimer := NewClaimer(own, "node-1", at(0))
		var closes [][]ownerSpan
		for s, next := 10.0, 0; s <= upTo; s += 10 {
			for ; next < len(changes) && changes[next].at < s; next++ {
				rebuildAt(clock, src, changes[next].at, changes[next].kv...)
			}
			clock.Set(at(s))
			closes = append(closes, spansOf(claimer.CloseInterval(at(s)), a))
		}
		return claimer, closes
	}
	// claimedUntil replays up to the close at upTo and returns when the
	// fallback claims of addr end, closing the next interval 10 minutes
	// later: fallbackClaimFor after the fallback started.
	claimedUntil := func(upTo float64, addr string) float64 {
		claimer, _ := replay(upTo)
		got := spansOf(claimer.CloseInterval(at(upTo).Add(fallbackClaimFor)), addr)
		require.Len(t, got, 1, addr)
		return got[0].to - fallbackClaimFor.Seconds()
	}

	_, closes := replay(60)
	assert.Equal(t, []ownerSpan{{"pool", 10, 13, BasisSource}, {"pool2", 13, 20, BasisSource}}, closes[1])
	assert.Equal(t, 13.0, claimedUntil(20, a), "the fallback to pool2 started at 13 s")

	assert.Equal(t, []ownerSpan{{"pool2", 20, 30, BasisSource}}, closes[2], "one tenure, one claim: no retired claim spent on it")
	assert.Equal(t, 13.0, claimedUntil(30, a), "the same owner: still claimed until 10 minutes after 13 s")
	assert.Equal(t, 23.0, claimedUntil(30, y))

	assert.Equal(t, []ownerSpan{{"pool2", 30, 33, BasisSource}, {"wide", 33, 40, BasisSource}}, closes[3])
	assert.Equal(t, 33.0, claimedUntil(40, a))

	assert.Equal(t, []ownerSpan{{"wide", 40, 43, BasisSource}}, closes[4])
	assert.Empty(t, closes[5], "no fallback is kept for an address without an owner")
}

// The fallbacks of a snapshot are bounded; beyond the bound no more are
// made, with one warning per interval that dropped some.
func TestMaxFallbacks(t *testing.T) {
	clock := newManualClock(at(0))
	core, logs := observer.New(zap.WarnLevel)
	set := clockSettings(clock)
	set.Logger = zap.New(core)
	set.MaxFallbacks = 2
	src, own := startOwnershipWith(t, set, "10.0.1.0/24", "pool", "10.0.1.1", "a", "10.0.1.2", "b", "10.0.1.3", "c")
	claimer := NewClaimer(own, "node-1", at(0))

	rebuildAt(clock, src, 5, "10.0.1.0/24", "pool")
	pool := 0
	for _, c := range claimer.CloseInterval(at(10)) {
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
	src.notify()
	assert.Len(t, claimer.CloseInterval(at(20)), 2, "the fallbacks kept are claimed on")
	assert.Equal(t, 1, logs.Len(), "no warning for an interval that dropped nothing")
}

// The addresses retired in one interval are bounded; beyond the bound they
// are dropped with one warning per interval.
func TestMaxRetired(t *testing.T) {
	clock := newManualClock(at(0))
	core, logs := observer.New(zap.WarnLevel)
	set := clockSettings(clock)
	set.Logger = zap.New(core)
	set.MaxRetired = 2
	src, own := startOwnershipWith(t, set, "10.0.0.1", "a", "10.0.0.2", "b", "10.0.0.3", "c")
	claimer := NewClaimer(own, "node-1", at(0))

	rebuildAt(clock, src, 5)
	assert.Len(t, claimer.CloseInterval(at(10)), 2)
	require.Equal(t, 1, logs.Len())
	assert.Equal(t, int64(1), logs.All()[0].ContextMap()["dropped"])

	assert.Empty(t, claimer.CloseInterval(at(20)))
	assert.Equal(t, 1, logs.Len(), "no warning for an interval that dropped nothing")
}

// Renewing a wider prefix (a narrower one inside it went away) does not end
// the fallbacks under it: the owner did not change, and their claims do not
// use up the retired budget that real changes need.
func TestFallbackRenewalsDoNotSpendTheRetiredBudget(t *testing.T) {
	clock := newManualClock(at(0))
	set := clockSettings(clock)
	set.MaxRetired = 5 // stands for 65536
	src, own := startOwnershipWith(t, set, "10.0.1.0/24", "pool",
		"10.0.1.1", "a", "10.0.1.2", "b", "10.0.1.3", "c", "10.0.1.4", "d",
		"10.0.1.6", "w", "10.0.2.9", "z")
	claimer := NewClaimer(own, "n", at(0))
	rebuildAt(clock, src, 1, "10.0.1.0/24", "pool", "10.0.1.6", "w", "10.0.2.9", "z") // four fallbacks to the /24
	claimer.CloseInterval(at(10))
	rebuildAt(clock, src, 12, "10.0.1.0/24", "pool", "10.0.2.9", "z") // w goes: the /24 is renewed
	rebuildAt(clock, src, 13, "10.0.1.0/24", "pool", "10.0.2.9", "z2")
	rebuildAt(clock, src, 14, "10.0.1.0/24", "pool", "10.0.2.9", "z")
	assert.Equal(t, []ownerSpan{{"z", 10, 13, BasisSource}, {"z2", 13, 14, BasisSource}, {"z", 14, 20, BasisSource}},
		spansOf(claimer.CloseInterval(at(20)), "10.0.2.9"))
}

// At MaxFallbacks the newest fallbacks are kept: an old one no longer keeps
// the processor from joining claims across it.
func TestMaxFallbacksKeepsTheNewest(t *testing.T) {
	clock := newManualClock(at(0))
	set := clockSettings(clock)
	set.MaxFallbacks = 1
	src, own := startOwnershipWith(t, set, "10.0.1.0/24", "pool", "10.0.1.1", "a", "10.0.1.2", "b")
	claimer := NewClaimer(own, "n", at(0))
	rebuildAt(clock, src, 1, "10.0.1.0/24", "pool", "10.0.1.2", "b")
	for s := 10.0; s <= 120; s += 10 {
		claimer.CloseInterval(at(s))
	}
	rebuildAt(clock, src, 121, "10.0.1.0/24", "pool")
	rebuildAt(clock, src, 125, "10.0.1.0/24", "pool", "10.0.1.2", "b") // b back within merge_gap
	assert.Equal(t, []ownerSpan{{"b", 120, 121, BasisSource}, {"pool", 121, 125, BasisSource}, {"b", 125, 130, BasisSource}},
		spansOf(claimer.CloseInterval(at(130)), "10.0.1.2"))
}

// After the wall clock steps back, a live fallback is not taken for one an
// interval closed past already.
func TestFallbackSurvivesAStepBack(t *testing.T) {
	clock, src, own := startOwnership(t, 2000, "10.0.1.0/24", "pool", "10.0.1.5", "x", "10.0.9.9", "q")
	claimer := NewClaimer(own, "n", at(2000))
	claimer.CloseInterval(at(2010))
	rebuildAt(clock, src, 100, "10.0.1.0/24", "pool", "10.0.9.9", "q")
	rebuildAt(clock, src, 101, "10.0.1.0/24", "pool", "10.0.9.9", "q2")
	assert.Empty(t, claimer.CloseInterval(at(110)), "the interval that the step back cut short")
	assert.Contains(t, spansOf(claimer.CloseInterval(at(120)), "10.0.1.5"), ownerSpan{"pool", 110, 120, BasisSource},
		"the fallback of 10.0.1.5 is kept and claimed")
}
