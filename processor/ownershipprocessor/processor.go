package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/processor"
	"go.uber.org/zap"

	"github.com/flowattr/flowattr/internal/clock"
	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/intervalstore"
)

// Claim origins: what record a claim was read from. Each has metrics of
// its own.
const (
	originClaim = iota // a claim record: claims_applied, claims_rejected
	originFlow         // the local side of a flow record: local_claims_applied, local_claims_rejected
	numOrigins
)

// Reasons written on flow records or counted for claims, besides the
// intervalstore reasons and flowschema.RejectReason.
const (
	reasonMissingKey      = "missing_key"            // no key attribute
	reasonBadKey          = "bad_key"                // key attribute not a string IP address
	reasonBadTime         = "bad_time"               // time attribute present but not positive int nanoseconds, or the start past now+max_future
	reasonMissingTime     = "missing_time"           // neither time attribute nor Timestamp
	reasonStatic          = "static"                 // attributed from static_owners
	reasonOutsideWorkload = "outside_workload_cidrs" // no claims for this address, no static owner
	reasonTimestampUsed   = "timestamp_fallback"     // attributed, at the record Timestamp
	reasonEndInFuture     = "end_in_future"          // claim ends past now+max_future
	reasonUnauthorized    = "unauthorized_sender"    // the sender may not claim the address
	reasonUnauthenticated = "unauthenticated_sender" // the connection's certificate does not name the sender
	reasonOwnerTooLarge   = "owner_too_large"        // the claim's owner is beyond owner_limits
	reasonExpired         = "expired"                // claim ends before now-retention
	reasonStoreError      = "store_error"            // the store refused the claim otherwise
)

// ownershipProcessor is one pipeline's instance of the processor: it
// implements processor.Logs itself, rather than through processorhelper,
// because the records it holds leave after the ConsumeLogs that received
// them.
type ownershipProcessor struct {
	id     component.ID
	stores *factory // holds shared, by id
	cfg    *Config
	shared *sharedStore
	store  *intervalstore.Store[intervalstore.Key128]
	tables *addressTables
	clock  clock.Clock
	next   consumer.Logs
	logger *zap.Logger
	tel    *telemetry
	hold   *hold   // nil when max_wait is 0
	outbox *outbox // released records to send again; nil when max_wait is 0
	sender sender  // releases from outside ConsumeLogs
	owners *flowschema.OwnerWriter
	// translatedOwners writes the translated peer's owner; nil when
	// translated_owner_prefix is empty.
	translatedOwners *flowschema.OwnerWriter

	shutdownOnce sync.Once
	// outside counts the releases under way that another pipeline's claim
	// or the store's clock callback started, which shutdown waits for: their
	// records must reach the next consumer before it is shut down.
	outside   sync.WaitGroup
	outsideMu sync.Mutex
	stopping  bool // set by shutdown, under outsideMu: start no more
	// life is the context of every release: no request's, and cancelled
	// by a shutdown whose deadline passes while releases are still
	// downstream, so that a blocked next consumer cannot hold it up.
	life    context.Context
	endLife context.CancelFunc
}

var _ processor.Logs = (*ownershipProcessor)(nil)

func newOwnershipProcessor(set processor.Settings, cfg *Config, shared *sharedStore, next consumer.Logs, stores *factory) (*ownershipProcessor, error) {
	tel, err := newTelemetry(set)
	if err != nil {
		return nil, err
	}
	p := &ownershipProcessor{
		id:     set.ID,
		stores: stores,
		cfg:    cfg,
		shared: shared,
		store:  shared.store,
		tables: shared.tables,
		clock:  shared.clock,
		next:   next,
		logger: set.Logger,
		tel:    tel,
		owners: flowschema.NewOwnerWriter(cfg.OwnerPrefix),
	}
	if cfg.TranslatedOwnerPrefix != "" {
		p.translatedOwners = flowschema.NewOwnerWriter(cfg.TranslatedOwnerPrefix)
	}
	p.life, p.endLife = context.WithCancel(context.Background())
	if cfg.MaxWait > 0 {
		p.hold = newHold(cfg.MaxWait, cfg.MaxPending)
		p.outbox = &outbox{max: cfg.MaxPending}
	}
	shared.subscribe(p)
	return p, nil
}

// Start exports the counters at zero and starts the shared store's clock
// callbacks, unless another pipeline's instance did.
func (p *ownershipProcessor) Start(ctx context.Context, _ component.Host) error {
	p.tel.zero(ctx)
	p.stores.start(p.id)
	return nil
}

// Shutdown flushes the held records downstream and lets go of the shared
// store; see shutdown.
func (p *ownershipProcessor) Shutdown(ctx context.Context) error {
	p.shutdown(ctx)
	return nil
}

// Capabilities says that the processor modifies the batches it consumes.
func (p *ownershipProcessor) Capabilities() consumer.Capabilities {
	return consumer.Capabilities{MutatesData: true}
}

// lookup answers who held addr at t.
func (p *ownershipProcessor) lookup(addr netip.Addr, t time.Time) intervalstore.Result {
	return p.store.Lookup(intervalstore.AddrKey(addr), t)
}
