package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"context"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/processor/processorhelper"

	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadata"
)

// NewFactory returns the factory of the ownership processor. It reads the
// wall clock, and a background goroutine per store releases held records
// whose max_wait is over and prunes the store while no logs arrive.
func NewFactory() processor.Factory {
	return newFactory(realClock{})
}

// NewFactoryWithClock returns the factory of the ownership processor reading
// time from c, for deterministic simulations and tests. Nothing runs in the
// background: every ConsumeLogs first releases the held records whose
// max_wait is over on c, with their final lookup, in a batch of their own
// after its output, and prunes the store when the prune interval has passed
// on c. A pipeline's held records therefore leave only through its own
// ConsumeLogs (or a claim for their address, or shutdown): to let time pass
// without new records, consume an empty plog.Logs.
func NewFactoryWithClock(c Clock) processor.Factory {
	return newFactory(injectedClock{c})
}

// factory keeps one shared store per component ID: the collector creates a
// processor per pipeline, but a heartbeat pipeline and a flow pipeline that
// list the same ID must see the same ownership ranges.
type factory struct {
	clock clock

	mu     sync.Mutex
	stores map[component.ID]*sharedStore
}

func newFactory(c clock) processor.Factory {
	f := &factory{clock: c, stores: make(map[component.ID]*sharedStore)}
	return processor.NewFactory(
		metadata.Type,
		func() component.Config { return createDefaultConfig() },
		processor.WithLogs(f.createLogs, metadata.LogsStability),
	)
}

func (f *factory) createLogs(ctx context.Context, set processor.Settings, cfg component.Config, next consumer.Logs) (processor.Logs, error) {
	pcfg := cfg.(*Config)
	shared, err := f.acquire(set, pcfg)
	if err != nil {
		return nil, err
	}
	p, err := newOwnershipProcessor(set, pcfg, shared, next)
	if err != nil {
		f.release(set.ID)
		return nil, err
	}
	lp, err := processorhelper.NewLogs(ctx, set, cfg, next, p.processLogs,
		processorhelper.WithCapabilities(consumer.Capabilities{MutatesData: true}),
		processorhelper.WithStart(func(context.Context, component.Host) error {
			f.start(set.ID)
			return nil
		}),
		processorhelper.WithShutdown(func(ctx context.Context) error {
			p.shutdown(ctx, func() { f.release(set.ID) })
			return nil
		}),
	)
	if err != nil {
		p.shutdown(ctx, func() { f.release(set.ID) })
		return nil, err
	}
	return logsProcessor{Logs: lp, p: p}, nil
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
	s, err := newSharedStore(set, cfg, f.clock)
	if err != nil {
		return nil, err
	}
	s.refs = 1
	f.stores[set.ID] = s
	return s, nil
}

// start starts the shared store's background work once, whichever pipeline
// starts first.
func (f *factory) start(id component.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.stores[id]; ok {
		s.start()
	}
}

// release drops a reference; the last one stops the background work and
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
