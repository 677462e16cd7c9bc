package localowner

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowattr/flowattr/internal/owners"
)

// CloseInterval, which the receiver calls every claim interval, does not
// wait for a rebuild's merge, which can take long for a large file.
func TestCloseIntervalDoesNotWaitForARebuild(t *testing.T) {
	clock := newManualClock(at(0))
	hs := &hookSource{mapSource: newMapSource("10.0.0.1", "a")}
	own := New([]Source{hs}, clockSettings(clock))
	require.NoError(t, own.Start(context.Background()))
	claimer := NewClaimer(own, "n", at(0))
	merging, finish := make(chan struct{}), make(chan struct{})
	hs.hook = func() {
		close(merging)
		<-finish
	}
	rebuilt := make(chan struct{})
	go func() {
		hs.notify()
		close(rebuilt)
	}()
	<-merging
	closed := make(chan struct{})
	go func() {
		claimer.CloseInterval(at(1))
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Error("CloseInterval waited for the rebuild")
	}
	close(finish)
	<-rebuilt
}

// A source that fails to start fails Start, and the sources started before
// it are shut down.
func TestStartShutsDownTheSourcesStartedBeforeAFailure(t *testing.T) {
	first, failing := &countingSource{}, &countingSource{startErr: errors.New("no kubelet")}
	own := New([]Source{first, failing}, clockSettings(newManualClock(at(0))))
	require.EqualError(t, own.Start(context.Background()), "no kubelet")
	assert.Equal(t, 1, first.shutdowns)
	assert.Zero(t, failing.shutdowns)
}

// countingSource names no owner and counts Shutdown calls; Start returns
// startErr.
type countingSource struct {
	startErr  error
	shutdowns int
}

func (*countingSource) Entries() map[netip.Prefix]owners.Owner { return nil }
func (s *countingSource) Start(context.Context, func()) error  { return s.startErr }
func (s *countingSource) Shutdown() error {
	s.shutdowns++
	return nil
}
