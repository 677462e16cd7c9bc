package localowner

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowattr/flowattr/internal/owners"
)

// timedSource is a TimedSource whose tenures the test replaces.
type timedSource struct {
	mu       sync.Mutex
	m        map[netip.Prefix]Tenure
	onChange func()
}

// set replaces the tenures with addr -> (owner, since seconds) and notifies.
func (s *timedSource) set(tenures map[string]Tenure) {
	m := map[netip.Prefix]Tenure{}
	for a, t := range tenures {
		p, err := owners.ParsePrefix(a)
		if err != nil {
			panic(err)
		}
		m[p] = t
	}
	s.mu.Lock()
	s.m = m
	onChange := s.onChange
	s.mu.Unlock()
	if onChange != nil {
		onChange()
	}
}

func (s *timedSource) Tenures() map[netip.Prefix]Tenure {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m
}

func (s *timedSource) Entries() map[netip.Prefix]owners.Owner {
	out := map[netip.Prefix]owners.Owner{}
	for p, t := range s.Tenures() {
		out[p] = t.Owner
	}
	return out
}

func (s *timedSource) Start(_ context.Context, onChange func()) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onChange = onChange
	return nil
}

func (*timedSource) Shutdown() error { return nil }

func tenure(id string, since float64) Tenure {
	return Tenure{Owner: owners.Owner{ID: id}, Since: at(since)}
}

func TestTimedSourceIsClaimedFromSinceOnce(t *testing.T) {
	clock := newManualClock(at(0))
	src := &timedSource{}
	own := New([]Source{src}, clockSettings(clock))
	require.NoError(t, own.Start(context.Background()))
	claimer := NewClaimer(own, "node-1", at(0))
	claimer.CloseInterval(at(10))

	// Learnt at 17 that pod-b has held the address since 12, before the
	// interval's claims would otherwise start (10) or the merge (17).
	clock.Set(at(17))
	src.set(map[string]Tenure{"10.0.0.2": tenure("pod-b", 12), "10.0.0.3": tenure("pod-c", 3)})
	assertSince(t, lookup(t, own, "10.0.0.2"), 12, "flows since the tenure's start name its owner")

	got := claimer.CloseInterval(at(20))
	assert.Equal(t, []ownerSpan{{"pod-b", 12, 20, BasisSource}}, spansOf(got, "10.0.0.2"))
	assert.Equal(t, []ownerSpan{{"pod-c", 3, 20, BasisSource}}, spansOf(got, "10.0.0.3"),
		"a tenure dated before the previous close is claimed from its start too")
	got = claimer.CloseInterval(at(30))
	assert.Equal(t, []ownerSpan{{"pod-b", 20, 30, BasisSource}}, spansOf(got, "10.0.0.2"), "then from the interval's start")

	// Removed and published again: a new tenure, claimed from its own
	// start, after the old one ended at its removal.
	clock.Set(at(32))
	src.set(map[string]Tenure{})
	clock.Set(at(35))
	src.set(map[string]Tenure{"10.0.0.2": tenure("pod-b", 35)})
	got = claimer.CloseInterval(at(40))
	assert.Equal(t, []ownerSpan{{"pod-b", 30, 32, BasisSource}, {"pod-b", 35, 40, BasisSource}}, spansOf(got, "10.0.0.2"),
		"the time between the two tenures is not claimed")
}

func TestTimedSourceFlowsBeforeSinceAreNotNamed(t *testing.T) {
	clock := newManualClock(at(0))
	src := &timedSource{}
	own := New([]Source{src}, clockSettings(clock))
	require.NoError(t, own.Start(context.Background()))
	claimer := NewClaimer(own, "node-1", at(0))

	clock.Set(at(8))
	src.set(map[string]Tenure{"10.0.0.2": tenure("pod-b", 5)})
	e := lookup(t, own, "10.0.0.2")
	assert.False(t, e.HeldThroughout(at(4), bootAt(4), true), "a flow that began before the tenure")
	claimer.Observe(netip.MustParseAddr("10.0.0.2"), e, at(4), at(9))
	got := claimer.CloseInterval(at(10))
	assert.Equal(t, []ownerSpan{{"pod-b", 5, 10, BasisSource}}, spansOf(got, "10.0.0.2"), "claims never reach before the tenure")
}

func TestClaimNewClaimsNewAddressesAtOnce(t *testing.T) {
	clock := newManualClock(at(0))
	src := &timedSource{}
	var signals atomic.Int32
	set := clockSettings(clock)
	set.NewAddresses = func() { signals.Add(1) }
	own := New([]Source{src, newMapSource("10.0.0.9", "static")}, set)
	require.NoError(t, own.Start(context.Background()))
	claimer := NewClaimer(own, "node-1", at(0))
	assert.Zero(t, signals.Load(), "the initial entries are claimed by the first close")
	assert.Empty(t, claimer.ClaimNew(at(1)))

	clock.Set(at(3))
	src.set(map[string]Tenure{"10.0.0.2": tenure("pod-b", 2.5)})
	assert.Equal(t, int32(1), signals.Load())
	got := claimer.ClaimNew(at(3.1))
	assert.Equal(t, []ownerSpan{{"pod-b", 2.5, 3.1, BasisSource}}, spansOf(got, "10.0.0.2"))
	assert.Len(t, got, 1, "only the new address, not the static one")
	assert.Empty(t, claimer.ClaimNew(at(3.2)), "claimed once")

	clock.Set(at(4))
	src.set(map[string]Tenure{"10.0.0.2": tenure("pod-b", 2.5)})
	assert.Equal(t, int32(1), signals.Load(), "an unchanged tenure is not new")
	clock.Set(at(5))
	src.set(map[string]Tenure{})
	assert.Equal(t, int32(1), signals.Load(), "a removal is not new")

	got = claimer.CloseInterval(at(10))
	assert.Equal(t, []ownerSpan{{"pod-b", 2.5, 5, BasisSource}}, spansOf(got, "10.0.0.2"), "the close claims the tenure whole")
}

func TestTimedSourceInitialTenuresAreClaimedFromSince(t *testing.T) {
	clock := newManualClock(at(50))
	src := &timedSource{}
	src.set(map[string]Tenure{"10.0.0.2": tenure("pod-b", 12)}) // a collector that restarted at 50
	own := New([]Source{src, newMapSource("10.0.0.9", "static")}, clockSettings(clock))
	require.NoError(t, own.Start(context.Background()))
	clock.Set(at(51))
	claimer := NewClaimer(own, "node-1", at(51))
	got := claimer.CloseInterval(at(60))
	assert.Equal(t, []ownerSpan{{"pod-b", 12, 60, BasisSource}}, spansOf(got, "10.0.0.2"), "back to the tenure's start, before the collector started")
	assert.Equal(t, []ownerSpan{{"static", 50, 60, BasisSource}}, spansOf(got, "10.0.0.9"), "a plain source's entry from its merge")
	got = claimer.CloseInterval(at(70))
	assert.Equal(t, []ownerSpan{{"pod-b", 60, 70, BasisSource}}, spansOf(got, "10.0.0.2"))
}
