package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"context"
	"net/netip"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/processor"

	"github.com/flowattr/flowattr/internal/clock"
	"github.com/flowattr/flowattr/internal/localowner"
	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadata"
)

// NewFactory returns the factory of the ownership processor, on the wall
// clock: NewFactoryWithClock(clock.System{}).
func NewFactory() processor.Factory {
	return NewFactoryWithClock(clock.System{})
}

// NewFactoryWithClock returns the factory of the ownership processor reading
// time from c. The clock is the only difference from NewFactory: the
// processor's background work, releasing held records whose max_wait is
// over, sending again released records the next consumer refused, and
// pruning the store, runs as c.Every callbacks, while every ConsumeLogs
// first does the same work that has fallen due on c. On a clock.Manual,
// for deterministic simulations and tests, the callbacks run when the clock
// is advanced.
func NewFactoryWithClock(c clock.Clock) processor.Factory {
	return newFactory(c, localowner.HostUnicastAddrs)
}

// newFactory is NewFactoryWithClock listing the host's own addresses, for
// workload_host_addresses, with hostAddrs.
func newFactory(c clock.Clock, hostAddrs func() ([]netip.Addr, error)) processor.Factory {
	f := &factory{clock: c, hostAddrs: hostAddrs, stores: make(map[component.ID]*sharedStore)}
	return processor.NewFactory(
		metadata.Type,
		func() component.Config { return createDefaultConfig() },
		processor.WithLogs(f.createLogs, metadata.LogsStability),
	)
}

// factory keeps one shared store per component ID: the collector creates a
// processor per pipeline, but a claim pipeline and a flow pipeline that
// list the same ID must see the same ownership ranges.
type factory struct {
	clock     clock.Clock
	hostAddrs func() ([]netip.Addr, error)

	mu     sync.Mutex
	stores map[component.ID]*sharedStore
}

func (f *factory) createLogs(_ context.Context, set processor.Settings, cfg component.Config, next consumer.Logs) (processor.Logs, error) {
	pcfg := cfg.(*Config)
	shared, err := f.acquire(set, pcfg)
	if err != nil {
		return nil, err
	}
	p, err := newOwnershipProcessor(set, pcfg, shared, next, f)
	if err != nil {
		f.release(set.ID)
		return nil, err
	}
	return p, nil
}

// acquire returns the shared store of set.ID, creating it on first use, and
// takes a reference on it. Every acquire is matched by one release.
func (f *factory) acquire(set processor.Settings, cfg *Config) (*sharedStore, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.stores[set.ID]; ok {
		s.refs++
		return s, nil
	}
	s, err := newSharedStore(set, cfg, f.clock, f.hostAddrs)
	if err != nil {
		return nil, err
	}
	s.refs = 1
	f.stores[set.ID] = s
	return s, nil
}

// start starts the shared store's clock callbacks once, whichever pipeline
// starts first.
func (f *factory) start(id component.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.stores[id]; ok {
		s.start()
	}
}

// release drops a reference; the last one stops the clock callbacks and
// forgets the store, so a reloaded configuration starts afresh.
func (f *factory) release(id component.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.stores[id]
	if !ok {
		return
	}
	s.refs--
	if s.refs > 0 {
		return
	}
	delete(f.stores, id)
	s.stop()
}
