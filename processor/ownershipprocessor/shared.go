package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/processor"

	"github.com/flowattr/flowattr/internal/clock"
	"github.com/flowattr/flowattr/internal/intervalstore"
	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadata"
)

// sharedStore is the state shared by every processor that uses one store
// (every pipeline's instance of one processor ID, and the processors that
// name it in store): the interval store, the CIDR tables, and the clock
// callbacks that prune the store, release held records whose wait is over
// and send again refused released records while no batch arrives to do it.
type sharedStore struct {
	name string
	// creator is the processor whose configuration built the store; the
	// store-level settings of every other user agree with it.
	creator component.ID

	cfg    *Config
	tables *addressTables
	store  *intervalstore.Store[intervalstore.Key128]
	clock  clock.Clock
	logger *zap.Logger
	// gauges observes the store's size; registered once per store, with the
	// telemetry settings of the pipeline that created it.
	gauges *metadata.TelemetryBuilder

	pruneEvery time.Duration
	lastPrune  atomic.Int64 // Unix nanoseconds on clock

	// hostAddrs lists the host's own addresses for tables, when
	// workload_host_addresses is set.
	hostAddrs func() ([]netip.Addr, error)

	// refs and stops are guarded by factory.mu.
	refs  int
	stops []func() // of the clock callbacks, while they run

	subsMu sync.RWMutex
	subs   map[*ownershipProcessor]struct{}
}

func newSharedStore(set processor.Settings, name string, cfg *Config, c clock.Clock, hostAddrs func() ([]netip.Addr, error)) (*sharedStore, error) {
	tables, err := cfg.tables()
	if err != nil {
		return nil, err
	}
	if tables.host != nil {
		addrs, err := hostAddrs()
		if err != nil {
			return nil, fmt.Errorf("workload_host_addresses: listing the host's addresses: %w", err)
		}
		tables.setHostAddrs(addrs)
	}
	store, err := intervalstore.New[intervalstore.Key128](intervalstore.Config{
		MergeGap:  cfg.MergeGap,
		ClockSkew: cfg.ClockSkew,
		Retention: cfg.Retention,
		MaxKeys:   cfg.MaxKeys,
		Now:       c.Now,
	})
	if err != nil {
		return nil, err
	}
	gauges, err := metadata.NewTelemetryBuilder(set.TelemetrySettings)
	if err != nil {
		return nil, err
	}
	s := &sharedStore{
		name:    name,
		creator: set.ID,

		cfg:    cfg,
		tables: tables,
		store:  store,
		clock:  c,
		logger: set.Logger,
		gauges: gauges,
		subs:   make(map[*ownershipProcessor]struct{}),

		pruneEvery: pruneInterval(cfg.Retention),
		hostAddrs:  hostAddrs,
	}
	s.lastPrune.Store(c.Now().UnixNano())
	// Every store of a collector reports into the same gauges: the store
	// attribute tells them apart.
	id := metric.WithAttributeSet(attribute.NewSet(attribute.String("store", name)))
	err = gauges.RegisterProcessorOwnershipKeysCallback(func(_ context.Context, o metric.Int64Observer) error {
		o.Observe(int64(s.store.Stats().Keys), id)
		return nil
	})
	if err == nil {
		err = gauges.RegisterProcessorOwnershipRangesCallback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(int64(s.store.Stats().Ranges), id)
			return nil
		})
	}
	if err != nil {
		gauges.Shutdown()
		return nil, err
	}
	return s, nil
}

// start registers the clock callbacks unless they run already.
func (s *sharedStore) start() {
	if s.stops != nil {
		return
	}
	s.stops = append(s.stops, s.clock.Every(s.pruneEvery, s.pruneTick))
	if s.cfg.MaxWait > 0 {
		s.stops = append(s.stops, s.clock.Every(holdCheckInterval(s.cfg.MaxWait), s.releaseTick))
	}
	if s.tables.host != nil {
		s.stops = append(s.stops, s.clock.Every(hostAddrsRefresh, s.hostAddrsTick))
	}
}

// hostAddrsRefresh is how often the host's own addresses are listed again
// for workload_host_addresses: as often as the receiver's default
// claim_interval, at which it claims them.
const hostAddrsRefresh = 10 * time.Second

// hostAddrsTick lists the host's addresses again; on failure the last list
// stays.
func (s *sharedStore) hostAddrsTick() {
	addrs, err := s.hostAddrs()
	if err != nil {
		s.logger.Warn("Listing the host's addresses for workload_host_addresses failed; keeping the last list", zap.Error(err))
		return
	}
	s.tables.setHostAddrs(addrs)
}

// stop ends the clock callbacks, if any, and unregisters the gauges.
func (s *sharedStore) stop() {
	for _, stop := range s.stops {
		stop()
	}
	s.stops = nil
	s.gauges.Shutdown()
}

// pruneTick and releaseTick do, every so often on the clock, what every
// ConsumeLogs does too, through the same functions: the hold's lock
// serialises releases, so whichever comes first releases a record and the
// other finds it gone; the outbox sends again one batch at a time; the
// store serialises prunes. releaseTick only hands each pipeline's records
// to that pipeline's sender: no next consumer delays the others.
func (s *sharedStore) pruneTick() {
	// Unconditionally: a batch's prune since the last tick must not
	// stretch an idle store's interval to twice pruneEvery.
	s.lastPrune.Store(s.clock.Now().UnixNano())
	s.prune()
}

func (s *sharedStore) releaseTick() {
	now := s.clock.Now()
	for _, p := range s.subscribers() {
		p.releaseExpired(now)
	}
}

// pruneIfDue prunes the store once the prune interval has passed on the
// clock since the last prune; of concurrent callers, one prunes.
func (s *sharedStore) pruneIfDue(now time.Time) {
	last := s.lastPrune.Load()
	if now.UnixNano()-last < int64(s.pruneEvery) || !s.lastPrune.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	s.prune()
}

func (s *sharedStore) prune() {
	ranges, keys := s.store.Prune()
	if ranges > 0 || keys > 0 {
		s.logger.Debug("Pruned ownership store", zap.Int("ranges", ranges), zap.Int("keys", keys))
	}
}

// pruneInterval prunes often enough that the store holds at most about 10%
// more history than retention, and at least every minute.
func pruneInterval(retention time.Duration) time.Duration {
	return min(max(retention/10, time.Second), time.Minute)
}

// holdCheckInterval bounds how long past max_wait a held record can stay.
func holdCheckInterval(maxWait time.Duration) time.Duration {
	return min(max(maxWait/10, 10*time.Millisecond), time.Second)
}

func (s *sharedStore) subscribe(p *ownershipProcessor) {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	s.subs[p] = struct{}{}
}

func (s *sharedStore) unsubscribe(p *ownershipProcessor) {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	delete(s.subs, p)
}

func (s *sharedStore) subscribers() []*ownershipProcessor {
	s.subsMu.RLock()
	defer s.subsMu.RUnlock()
	out := make([]*ownershipProcessor, 0, len(s.subs))
	for p := range s.subs {
		out = append(out, p)
	}
	return out
}

// claimsApplied tells every pipeline's hold that keys got new claims in
// from's ConsumeLogs, so records waiting for them are looked up again. from
// sends its own released records itself; other pipelines' senders send
// theirs, so that their next consumers cannot hold up from.
func (s *sharedStore) claimsApplied(from *ownershipProcessor, keys []netip.Addr) {
	if len(keys) == 0 {
		return
	}
	for _, p := range s.subscribers() {
		if p == from {
			p.recheck(keys)
		} else {
			p.recheckFor(keys)
		}
	}
}
