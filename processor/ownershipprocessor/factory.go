package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
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
	f := &factory{clock: c, hostAddrs: hostAddrs, stores: make(map[string]*sharedStore), byID: make(map[component.ID]*sharedStore)}
	return processor.NewFactory(
		metadata.Type,
		func() component.Config { return createDefaultConfig() },
		processor.WithLogs(f.createLogs, metadata.LogsStability),
	)
}

// factory keeps one shared store per store name: the collector creates a
// processor per pipeline, but a claim pipeline and a flow pipeline that
// list the same ID, or processors that name the same store, must see the
// same ownership ranges.
type factory struct {
	clock     clock.Clock
	hostAddrs func() ([]netip.Addr, error)

	mu     sync.Mutex
	stores map[string]*sharedStore
	// byID is the store of each processor ID that uses one.
	byID map[component.ID]*sharedStore
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

// storeName is the store cfg names, by default the processor's own ID.
func storeName(id component.ID, cfg *Config) string {
	if cfg.Store != "" {
		return cfg.Store
	}
	return id.String()
}

// acquire returns the store that set.ID's processor uses, creating it on
// first use, and takes a reference on it. Every acquire is matched by one
// release. A processor whose store-level settings differ from those of
// the processor that created the store is refused.
func (f *factory) acquire(set processor.Settings, cfg *Config) (*sharedStore, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := storeName(set.ID, cfg)
	s, ok := f.stores[name]
	if ok {
		if diffs := storeSettingDiffs(cfg, s.cfg, set.ID.String(), s.creator.String()); len(diffs) > 0 {
			return nil, fmt.Errorf("processor %s shares store %q with processor %s, but %s; processors that share a store must set %s alike (a YAML anchor keeps them so)",
				set.ID, name, s.creator, strings.Join(diffs, ", "), strings.Join(storeSettingNames, ", "))
		}
		s.refs++
	} else {
		var err error
		if s, err = newSharedStore(set, name, cfg, f.clock, f.hostAddrs); err != nil {
			return nil, err
		}
		s.refs = 1
		f.stores[name] = s
	}
	f.byID[set.ID] = s
	return s, nil
}

// start starts the clock callbacks of id's store once, whichever pipeline
// starts first.
func (f *factory) start(id component.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.byID[id]; ok {
		s.start()
	}
}

// release drops a reference on id's store; the last one stops the clock
// callbacks and forgets the store, so a reloaded configuration starts
// afresh.
func (f *factory) release(id component.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.byID[id]
	if !ok {
		return
	}
	s.refs--
	if s.refs > 0 {
		return
	}
	delete(f.stores, s.name)
	for id, used := range f.byID {
		if used == s {
			delete(f.byID, id)
		}
	}
	s.stop()
}
