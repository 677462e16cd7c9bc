package ebpfflowreceiver

import (
	"context"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowattr/flowattr/internal/testutil/testclock"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/tracer"
)

// bootAt is at on the tests' boot clock.
func bootAt(seconds float64) time.Duration { return at(seconds).Sub(t0) }

// withBootStart gives ev the boot-clock start its Start has on the tests'
// boot clock (see testclock.Clock.Boot), unless the test set one: as the tracer
// would read it with the wall clock never stepped.
func withBootStart(ev tracer.Event) tracer.Event {
	if ev.StartBoot == 0 {
		ev.StartBoot = ev.Start.Sub(t0)
	}
	return ev
}

// fakeTracer delivers preloaded events from Read, then waits for the context
// or Close, like the real ring reader.
type fakeTracer struct {
	events []tracer.Event
	// beforeEvent, if set, runs before Read delivers event i.
	beforeEvent func(i int)
	// delivered is closed once Read has handed over every event.
	delivered chan struct{}

	active       []tracer.Event
	activeCalled chan struct{}
	activeOnce   sync.Once

	stats tracer.Stats

	closeOnce sync.Once
	closed    chan struct{}
}

func newFakeTracer(events ...tracer.Event) *fakeTracer {
	return &fakeTracer{
		events:       events,
		delivered:    make(chan struct{}),
		activeCalled: make(chan struct{}),
		closed:       make(chan struct{}),
	}
}

func (f *fakeTracer) Read(ctx context.Context, handle func(*tracer.Event)) error {
	var ev tracer.Event // reused, as the real tracer does
	for i := range f.events {
		if f.beforeEvent != nil {
			f.beforeEvent(i)
		}
		ev = withBootStart(f.events[i])
		handle(&ev)
	}
	close(f.delivered)
	select {
	case <-ctx.Done():
	case <-f.closed:
	}
	return nil
}

func (f *fakeTracer) Active(_ context.Context, handle func(*tracer.Event)) error {
	for i := range f.active {
		ev := withBootStart(f.active[i])
		handle(&ev)
	}
	f.activeOnce.Do(func() { close(f.activeCalled) })
	return nil
}

func (f *fakeTracer) Stats() (tracer.Stats, error) { return f.stats, nil }

func (f *fakeTracer) Close() error {
	f.closeOnce.Do(func() { close(f.closed) })
	return nil
}

func testEnvironment(ft *fakeTracer, clock *testclock.Clock, machineIDFile string, hostAddrs ...string) environment {
	return environment{
		newTracer: func(tracer.Options) (flowTracer, error) { return ft, nil },
		now:       clock.Now,
		bootNow:   clock.Boot,
		hostAddrs: func() ([]netip.Addr, error) {
			out := make([]netip.Addr, len(hostAddrs))
			for i, s := range hostAddrs {
				out[i] = netip.MustParseAddr(s)
			}
			return out, nil
		},
		machineIDFile: machineIDFile,
	}
}

// replaceFile writes data to path the way orchestrators do: a temporary file
// in the same directory renamed over the target.
func replaceFile(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(data), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func at(seconds float64) time.Time { return t0.Add(time.Duration(seconds * float64(time.Second))) }

// newManualClock returns a test clock reading t, whose boot clock reads zero
// at t0.
func newManualClock(t time.Time) *testclock.Clock { return testclock.New(t0, t) }
