package localowner // import "github.com/flowattr/flowattr/internal/localowner"

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Defaults of Settings' bounds.
const (
	// DefaultMaxRetired bounds the single addresses retired in one claim
	// interval (see Settings.MaxRetired).
	DefaultMaxRetired = 1 << 16
	// DefaultMaxFallbacks bounds the fallbacks kept at once (see
	// Settings.MaxFallbacks).
	DefaultMaxFallbacks = 1 << 16
)

// Settings are what Ownership takes from its user; Now and BootNow are
// required.
type Settings struct {
	// Now reads the wall clock, which claims are dated on.
	Now func() time.Time
	// BootNow reads the kernel's boot clock, which flows' startBoot is on
	// (see Entry.HeldThroughout). It does not step with the wall clock.
	BootNow func() time.Duration
	// Logger gets a warning for each claim interval in which a bound
	// dropped claims; nil for none.
	Logger *zap.Logger
	// MaxRetired bounds the single addresses whose owner a merge removed
	// or replaced within one claim interval, each of which is claimed for
	// that owner up to the change, so that a source flapping many
	// addresses cannot exhaust memory. Beyond it they are dropped. 0 for
	// DefaultMaxRetired.
	MaxRetired int
	// MaxFallbacks bounds the addresses that lost their own entry and are
	// claimed, for 10 minutes, for the owner of the wider prefix they fall
	// back to. Beyond it the newest are kept. 0 for DefaultMaxFallbacks.
	MaxFallbacks int
	// NewAddresses, when not nil, is called after a merge after Start
	// published a single address with a new owner, so that the caller can
	// claim it at once (Claimer.ClaimNew) rather than at the interval's
	// close: peers hold flows to an address until a claim covers it. It
	// runs on the goroutine of the source that changed, inside the merge:
	// it must not block nor call Ownership.
	NewAddresses func()
}

// Ownership merges the sources into one map from address to owner, by
// longest prefix, that lookups read without locking. For the same prefix,
// the source listed first wins. It keeps what claims need besides the
// current map: when each owner became known, and the owners that held a
// single address until a merge removed or replaced them.
//
// Lookup may be called from any goroutine. Merges run when a source calls
// its onChange; New and Start run one each.
type Ownership struct {
	sources []Source // highest precedence first
	now     func() time.Time
	bootNow func() time.Duration
	logger  *zap.Logger
	// newAddresses is Settings.NewAddresses.
	newAddresses func()

	mu        sync.Mutex // serializes rebuilds
	capturing bool       // Start has returned: new entries are not initial; under mu

	// pubMu guards publishing a snapshot together with the single
	// addresses it retired, so that closeInterval takes both as of one
	// moment without waiting for a rebuild's merge.
	pubMu   sync.Mutex
	current atomic.Pointer[snapshot]
	// Single addresses retired since the last closeInterval, at most
	// maxRetired, and how many more were dropped; under pubMu.
	retired        []retiredAddress
	maxRetired     int
	retiredDropped int
	// At most maxFallbacks fallbacks per snapshot, and how many more
	// were dropped since the last closeInterval; under pubMu.
	maxFallbacks     int
	fallbacksDropped int
	// closed is when the last interval closed: fallbacks claimed up to
	// then need no claim any more; under pubMu.
	closed time.Time
}

// New merges sources, highest precedence first, into an Ownership. The
// entries they give now, and until Start returns, are initial: their owners
// held their prefixes before any flow (see Source).
func New(sources []Source, set Settings) *Ownership {
	o := &Ownership{
		sources:      sources,
		now:          set.Now,
		bootNow:      set.BootNow,
		logger:       set.Logger,
		maxRetired:   set.MaxRetired,
		maxFallbacks: set.MaxFallbacks,
		newAddresses: set.NewAddresses,
	}
	if o.logger == nil {
		o.logger = zap.NewNop()
	}
	if o.maxRetired == 0 {
		o.maxRetired = DefaultMaxRetired
	}
	if o.maxFallbacks == 0 {
		o.maxFallbacks = DefaultMaxFallbacks
	}
	o.rebuild()
	return o
}

// Lookup returns the entry of addr's owner, by longest-prefix match over
// all sources.
func (o *Ownership) Lookup(addr netip.Addr) (*Entry, bool) {
	return o.current.Load().table.Lookup(addr)
}

// Start starts every source, merging them again whenever one changes, and
// merges them once more. Flows are to be captured only after it returns:
// entries made until then are initial. If a source fails to start, the
// ones started before it are shut down.
func (o *Ownership) Start(ctx context.Context) error {
	for i, src := range o.sources {
		if err := src.Start(ctx, o.rebuild); err != nil {
			for _, started := range slices.Backward(o.sources[:i]) {
				_ = started.Shutdown()
			}
			return err
		}
	}
	o.rebuild()
	o.mu.Lock()
	o.capturing = true
	o.mu.Unlock()
	return nil
}

// Shutdown shuts every source down and returns the first error.
func (o *Ownership) Shutdown() error {
	var firstErr error
	for _, src := range o.sources {
		if err := src.Shutdown(); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// closeInterval closes the claim interval at now: it returns the current
// merged map and takes the single addresses and fallbacks retired since the
// previous call, both as of one moment.
func (o *Ownership) closeInterval(now time.Time) (*snapshot, []retiredAddress) {
	o.pubMu.Lock()
	defer o.pubMu.Unlock()
	o.closed = now
	retired := o.retired
	o.retired = nil
	if o.retiredDropped > 0 {
		o.logger.Warn("Too many addresses changed owner in one claim interval; the owners they left are not claimed for the part of the interval they held them",
			zap.Int("claimed", len(retired)), zap.Int("dropped", o.retiredDropped))
		o.retiredDropped = 0
	}
	snap := o.current.Load()
	if o.fallbacksDropped > 0 {
		o.logger.Warn("Too many addresses fell back to a wider prefix; the owners of the prefixes are not claimed for the rest",
			zap.Int("claimed", len(snap.fallbacks)), zap.Int("dropped", o.fallbacksDropped))
		o.fallbacksDropped = 0
	}
	return snap, retired
}
