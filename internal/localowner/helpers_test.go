package localowner

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/internal/testutil/testclock"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func at(seconds float64) time.Time { return t0.Add(time.Duration(seconds * float64(time.Second))) }

// bootAt is at on the tests' boot clock.
func bootAt(seconds float64) time.Duration { return at(seconds).Sub(t0) }

// clockSettings are Settings on c, logging nowhere.
func clockSettings(c *testclock.Clock) Settings {
	return Settings{Now: c.Now, BootNow: c.Boot, Logger: zap.NewNop()}
}

// mapSource is an ownership source whose map the test replaces. Once
// started, every set calls onChange, as a source fed by its caller does.
type mapSource struct {
	mu       sync.Mutex
	m        map[netip.Prefix]owners.Owner
	onChange func()
}

func newMapSource(kv ...string) *mapSource {
	s := &mapSource{}
	s.set(kv...)
	return s
}

// set replaces the map with prefix, owner ID pairs and notifies.
func (s *mapSource) set(kv ...string) {
	m := map[netip.Prefix]owners.Owner{}
	for i := 0; i+1 < len(kv); i += 2 {
		p, err := owners.ParsePrefix(kv[i])
		if err != nil {
			panic(err)
		}
		m[p] = owners.Owner{ID: kv[i+1]}
	}
	s.mu.Lock()
	s.m = m
	s.mu.Unlock()
	s.notify()
}

// notify calls onChange, once started, without changing the map.
func (s *mapSource) notify() {
	s.mu.Lock()
	onChange := s.onChange
	s.mu.Unlock()
	if onChange != nil {
		onChange()
	}
}

func (s *mapSource) Entries() map[netip.Prefix]owners.Owner {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m
}

func (s *mapSource) Start(_ context.Context, onChange func()) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onChange = onChange
	return nil
}

func (*mapSource) Shutdown() error { return nil }

// startOwnership starts an Ownership of one map source holding kv (see
// mapSource.set), on a manual clock at start seconds.
func startOwnership(t *testing.T, start float64, kv ...string) (*testclock.Clock, *mapSource, *Ownership) {
	t.Helper()
	clock := newManualClock(at(start))
	src, own := startOwnershipWith(t, clockSettings(clock), kv...)
	return clock, src, own
}

// startOwnershipWith starts an Ownership with set of one map source holding
// kv.
func startOwnershipWith(t *testing.T, set Settings, kv ...string) (*mapSource, *Ownership) {
	t.Helper()
	src := newMapSource(kv...)
	own := New([]Source{src}, set)
	require.NoError(t, own.Start(context.Background()))
	return src, own
}

// rebuildAt sets src to kv at seconds: a started Ownership merges it then.
func rebuildAt(clock *testclock.Clock, src *mapSource, seconds float64, kv ...string) {
	clock.Set(at(seconds))
	src.set(kv...)
}

// lookup returns the entry of addr, which must have an owner.
func lookup(t *testing.T, own *Ownership, addr string) *Entry {
	t.Helper()
	e, ok := own.Lookup(netip.MustParseAddr(addr))
	require.True(t, ok, addr)
	return e
}

// assertSince asserts that this host knows e's owner from exactly seconds
// on: a flow that started then held it throughout, one a nanosecond
// earlier, on either clock, did not.
func assertSince(t *testing.T, e *Entry, seconds float64, msgAndArgs ...any) {
	t.Helper()
	assert.True(t, e.HeldThroughout(at(seconds), bootAt(seconds), true), msgAndArgs...)
	assert.False(t, e.HeldThroughout(at(seconds).Add(-time.Nanosecond), bootAt(seconds), true), msgAndArgs...)
	assert.False(t, e.HeldThroughout(at(seconds), bootAt(seconds)-time.Nanosecond, true), msgAndArgs...)
}

func span(c Claim) [2]time.Time { return [2]time.Time{c.Start, c.End} }

// ownerSpan is a claim's owner, span and basis.
type ownerSpan struct {
	owner string
	from  float64
	to    float64
	basis string
}

// spansOf returns the claims of addr in got, in order.
func spansOf(got []Claim, addr string) []ownerSpan {
	var out []ownerSpan
	for _, c := range got {
		if c.Address.String() == addr {
			out = append(out, ownerSpan{c.Owner.ID, c.Start.Sub(t0).Seconds(), c.End.Sub(t0).Seconds(), c.Basis})
		}
	}
	return out
}

// newManualClock returns a test clock reading t, whose boot clock reads zero
// at t0.
func newManualClock(t time.Time) *testclock.Clock { return testclock.New(t0, t) }
