package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pipeline"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/flowattr/flowattr/internal/clock"
	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/intervalstore"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadata"
)

// Claim origins, the values of the origin telemetry attribute.
const (
	originClaim = iota // a claim record
	originFlow         // the local side of a flow record
)

var originNames = [...]string{originClaim: "claim", originFlow: "flow"}

// Reasons written on flow records or counted for claims, besides the
// intervalstore reasons and flowschema.RejectReason.
const (
	reasonMissingKey      = "missing_key"            // no key attribute
	reasonBadKey          = "bad_key"                // key attribute not a string IP address
	reasonBadTime         = "bad_time"               // time attribute present but not positive int nanoseconds
	reasonMissingTime     = "missing_time"           // neither time attribute nor Timestamp
	reasonStatic          = "static"                 // attributed from static_owners
	reasonOutsideWorkload = "outside_workload_cidrs" // no heartbeats for this address, no static owner
	reasonTimestampUsed   = "timestamp_fallback"     // attributed, at the record Timestamp
	reasonEndInFuture     = "end_in_future"          // claim ends past now+max_future
	reasonUnauthorized    = "unauthorized_sender"    // source may not claim the address
	reasonUnauthenticated = "unauthenticated_sender" // sender's certificate does not name the source
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
	tel    *metadata.TelemetryBuilder
	hold   *hold // nil when max_wait is 0
	owners *flowschema.OwnerWriter

	itemAttrs    metric.MeasurementOption // processor and otel.signal, as processorhelper's
	originAttrs  [len(originNames)]metric.MeasurementOption
	statusAttrs  [4]metric.MeasurementOption // by intervalstore.Status
	outcomeAttrs map[string]metric.MeasurementOption

	shutdownOnce sync.Once
	// outside counts the releases under way that another pipeline's claim
	// or the store's clock callback started, which shutdown waits for: their
	// records must reach the next consumer before it is shut down.
	outside   sync.WaitGroup
	outsideMu sync.Mutex
	stopping  bool // set by shutdown, under outsideMu: start no more
}

var _ processor.Logs = (*ownershipProcessor)(nil)

func newOwnershipProcessor(set processor.Settings, cfg *Config, shared *sharedStore, next consumer.Logs, stores *factory) (*ownershipProcessor, error) {
	tel, err := metadata.NewTelemetryBuilder(set.TelemetrySettings)
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
		itemAttrs: metric.WithAttributeSet(attribute.NewSet(
			attribute.String("processor", set.ID.String()),
			attribute.String("otel.signal", pipeline.SignalLogs.String()))),
		outcomeAttrs: make(map[string]metric.MeasurementOption),
		owners:       flowschema.NewOwnerWriter(cfg.OwnerPrefix),
	}
	if cfg.MaxWait > 0 {
		p.hold = newHold(cfg.MaxWait, cfg.MaxPending)
	}
	for o, name := range originNames {
		p.originAttrs[o] = metric.WithAttributeSet(attribute.NewSet(attribute.String("origin", name)))
	}
	for s := range p.statusAttrs {
		p.statusAttrs[s] = metric.WithAttributeSet(attribute.NewSet(attribute.String("status", intervalstore.Status(s).String())))
	}
	for _, o := range []string{outcomeAttributed, outcomeDecided, outcomeTimeout, outcomeOverflow, outcomeShutdown} {
		p.outcomeAttrs[o] = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", o)))
	}
	shared.subscribe(p)
	return p, nil
}

// Start starts the shared store's clock callbacks, unless another
// pipeline's instance did.
func (p *ownershipProcessor) Start(context.Context, component.Host) error {
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

// batchStats accumulates one batch's telemetry, recorded once per batch.
type batchStats struct {
	applied    [len(originNames)]int64
	rejected   []rejection
	conflicts  int64
	evictions  int64
	lookups    [4]int64 // by intervalstore.Status
	heldChange int64
}

type rejection struct {
	origin int
	reason string
	n      int64
}

func (st *batchStats) reject(origin int, reason string, n int64) {
	for i := range st.rejected {
		if st.rejected[i].origin == origin && st.rejected[i].reason == reason {
			st.rejected[i].n += n
			return
		}
	}
	st.rejected = append(st.rejected, rejection{origin: origin, reason: reason, n: n})
}

func (st *batchStats) lookup(s intervalstore.Status) {
	if int(s) < len(st.lookups) {
		st.lookups[s]++
	}
}

// consumeBatch is what process did to the hold in one ConsumeLogs, for
// ConsumeLogs to finish once the batch has gone downstream.
type consumeBatch struct {
	released []releasedRecord // timeout and overflow releases of settled records
	own      batchRecords     // the batch's own records put in the hold
}

// ConsumeLogs processes ld, sends what is left of it to the next consumer
// and handles what the hold did meanwhile. Records released by it (max_wait
// over, pushed out of a full hold) are sent after the batch in one of their
// own, as every other release: a refusal is then counted in release_failures
// and logged, and neither fails nor loses the receiver's batch. The records
// the batch put in the hold stay tentative until the next consumer has
// answered: whatever releases one meanwhile (a claim from any pipeline,
// max_wait, another batch's overflow) hands it to the batch; only shutdown
// sends it (see hold.drain). When the batch went on, those follow it with
// the others. When it failed, its receiver may retry it whole, so the
// batch's records leave the hold undelivered, held or handed over: kept,
// they would go downstream twice.
func (p *ownershipProcessor) ConsumeLogs(ctx context.Context, ld plog.Logs) error {
	var b consumeBatch
	returned := false
	defer func() {
		if !returned {
			// consume panicked (a server may recover from it and fail
			// the request): the batch is settled as refused, lest its
			// records stay tentative for good, and the records it
			// released go on.
			p.settle(ctx, &b, true)
			p.send(context.WithoutCancel(ctx), b.released)
		}
	}()
	err := p.consume(ctx, ld, &b)
	returned = true
	p.settle(ctx, &b, err != nil)
	// Released records go on after the batch's request may have ended.
	p.send(context.WithoutCancel(ctx), b.released)
	return err
}

// consume processes ld, telling b about the records it held and released,
// and sends what is left of it to the next consumer; a batch left empty is
// not sent.
func (p *ownershipProcessor) consume(ctx context.Context, ld plog.Logs, b *consumeBatch) error {
	started := time.Now()
	p.tel.ProcessorIncomingItems.Add(ctx, int64(ld.LogRecordCount()), p.itemAttrs)
	p.process(ctx, ld, b)
	p.tel.ProcessorInternalDuration.Record(ctx, time.Since(started).Seconds(), p.itemAttrs)
	if ld.LogRecordCount() == 0 {
		return nil
	}
	return p.forward(ctx, ld)
}

// forward sends ld to the next consumer, counting its records as outgoing
// whether the next consumer accepts them or not.
func (p *ownershipProcessor) forward(ctx context.Context, ld plog.Logs) error {
	p.tel.ProcessorOutgoingItems.Add(ctx, int64(ld.LogRecordCount()), p.itemAttrs)
	return p.next.ConsumeLogs(ctx, ld)
}

// settle ends the tentative state of the records batch b held, adding to
// b.released those to send.
func (p *ownershipProcessor) settle(ctx context.Context, b *consumeBatch, refused bool) {
	if len(b.own.held) == 0 {
		return
	}
	released, dropped := p.hold.settle(&b.own, refused)
	b.released = append(b.released, released...)
	if dropped > 0 {
		p.tel.ProcessorOwnershipRecordsHeld.Add(ctx, -int64(dropped))
	}
}

// process applies the claims of ld, attributes its flow records, holding
// those that wait for a claim, and removes from ld what does not go on. It
// adds to b the records it held and those it released.
func (p *ownershipProcessor) process(ctx context.Context, ld plog.Logs, b *consumeBatch) {
	now := p.clock.Now()
	var st batchStats
	// Time-driven work first, what has fallen due on the processor's clock
	// since its callbacks last ran: records whose max_wait is over leave,
	// looked up before this batch's claims.
	p.shared.pruneIfDue(now)
	if p.hold != nil {
		b.released = p.hold.expire(now, p.lookup)
	}
	// Claims first, so that flows in the same batch see them.
	p.shared.claimsApplied(p.applyClaims(ld, identify(ctx, p.cfg.SenderIdentity), now, &st))
	p.attributeFlows(ld, b, &st)
	p.report(ctx, &st)
	removeEmpty(ld)
}

// applyClaims applies heartbeat records and, when configured, the local side
// of flow records to the store, removes heartbeat records unless kept, and
// returns the keys that got claims. sender is checked against every
// heartbeat's source and, when it is another host, every local claim.
func (p *ownershipProcessor) applyClaims(ld plog.Logs, sender senderIdentity, now time.Time, st *batchStats) []netip.Addr {
	var touched []netip.Addr
	local := localClaimsPool.Get().(*localClaims)
	defer local.reset()
	rls := ld.ResourceLogs()
	for i := 0; i < rls.Len(); i++ {
		sls := rls.At(i).ScopeLogs()
		for j := 0; j < sls.Len(); j++ {
			sls.At(j).LogRecords().RemoveIf(func(lr plog.LogRecord) bool {
				switch lr.EventName() {
				case flowschema.EventClaim:
					c, err := flowschema.ParseClaim(lr)
					if err != nil {
						reason := string(flowschema.ReasonOf(err))
						if reason == "" {
							reason = "invalid"
						}
						st.reject(originClaim, reason, 1)
						return true
					}
					if !sender.mayUse(c.Sender) {
						st.reject(originClaim, reasonUnauthenticated, 1)
						return true
					}
					if reason := p.checkClaim(c, originClaim, now); reason != "" {
						st.reject(originClaim, reason, 1)
						return true
					}
					// Applied after this pass, with the batch's other
					// heartbeats; kept until then in case the store
					// refuses it.
					local.heartbeats = append(local.heartbeats, intervalstore.Claim[intervalstore.Key128]{Key: intervalstore.AddrKey(c.Address), Owner: c.Owner, Start: c.Start, End: c.End})
					return !p.cfg.KeepClaims
				case flowschema.EventFlow:
					if !p.cfg.ApplyLocalClaims {
						return !p.cfg.KeepFlows
					}
					c, reason := p.localClaim(lr, &local.owners)
					if reason == "" {
						reason = p.checkClaim(c, originFlow, now)
					}
					if reason == "" {
						reason = sender.localClaimRefusal(p.tables, c.Address)
					}
					if reason != "" {
						st.reject(originFlow, reason, 1)
					} else {
						local.add(c, p.cfg.MergeGap)
					}
					return !p.cfg.KeepFlows
				}
				return false
			})
		}
	}
	// Applied together, the claims' cache misses in the store overlap.
	local.results = p.store.ApplyBatch(local.heartbeats, local.results[:0])
	refused := false
	for i, r := range local.results {
		if p.countApply(r.ApplyResult, r.Err, originClaim, 1, st) {
			touched = append(touched, local.heartbeats[i].Key.Addr())
		} else {
			refused = true
		}
	}
	if refused && p.cfg.KeepClaims {
		// Only claims this processor accepted are passed on: one the store
		// refused goes no further (not to peers, not to a topic). The
		// heartbeat records left are those of local.heartbeats, in order.
		p.dropRefused(ld, local.results)
	}
	local.batch = local.batch[:0]
	for _, lc := range local.claims {
		local.batch = append(local.batch, intervalstore.Claim[intervalstore.Key128]{Key: intervalstore.AddrKey(lc.Address), Owner: lc.Owner, Start: lc.Start, End: lc.End})
	}
	local.results = p.store.ApplyBatch(local.batch, local.results[:0])
	for i, lc := range local.claims {
		// Each flow record counts as a claim, joined or not.
		if r := local.results[i]; p.countApply(r.ApplyResult, r.Err, originFlow, lc.records, st) {
			touched = append(touched, lc.Address)
		}
	}
	return touched
}

// dropRefused removes the heartbeat records of ld whose claims the store
// refused: results holds the store's outcome of each heartbeat record left in
// ld, in order.
func (p *ownershipProcessor) dropRefused(ld plog.Logs, results []intervalstore.ClaimResult) {
	k := 0
	rls := ld.ResourceLogs()
	for i := 0; i < rls.Len(); i++ {
		sls := rls.At(i).ScopeLogs()
		for j := 0; j < sls.Len(); j++ {
			sls.At(j).LogRecords().RemoveIf(func(lr plog.LogRecord) bool {
				if lr.EventName() != flowschema.EventClaim {
					return false
				}
				k++
				return results[k-1].Err != nil
			})
		}
	}
}

// localClaims holds the claims of one batch until they are applied together,
// heartbeats as they are and local claims joined. It joins the local claims
// before they reach the store: a host's flows mostly share a few local
// addresses and overlap in time. Only claims the store would join anyway are joined (same address and
// owner, gap at most merge_gap), so the store ends up in the same state.
type localClaims struct {
	last    map[netip.Addr]int // the latest claim of each address in claims
	claims  []joinedClaim
	batch   []intervalstore.Claim[intervalstore.Key128] // claims, as given to ApplyBatch
	results []intervalstore.ClaimResult

	heartbeats []intervalstore.Claim[intervalstore.Key128] // the batch's checked heartbeat claims
	owners     flowschema.OwnerReader                      // reads the local owners of flows; kept across batches
}

type joinedClaim struct {
	flowschema.Claim
	records int64 // flow records joined into this claim
	prev    int   // the previous claim of the same address, or -1
}

var localClaimsPool = sync.Pool{New: func() any {
	return &localClaims{last: make(map[netip.Addr]int)}
}}

func (l *localClaims) add(c flowschema.Claim, mergeGap time.Duration) {
	prev, ok := l.last[c.Address]
	if !ok {
		prev = -1
	}
	for i := prev; i >= 0; i = l.claims[i].prev {
		j := &l.claims[i]
		if !j.Owner.Equal(c.Owner) || c.Start.After(j.End.Add(mergeGap)) || j.Start.After(c.End.Add(mergeGap)) {
			continue
		}
		if c.Start.Before(j.Start) {
			j.Start = c.Start
		}
		if c.End.After(j.End) {
			j.End = c.End
		}
		j.records++
		return
	}
	l.last[c.Address] = len(l.claims)
	l.claims = append(l.claims, joinedClaim{Claim: c, records: 1, prev: prev})
}

func (l *localClaims) reset() {
	clear(l.last)
	clear(l.claims) // drop references to owners
	l.claims = l.claims[:0]
	clear(l.batch)
	l.batch = l.batch[:0]
	clear(l.heartbeats)
	l.heartbeats = l.heartbeats[:0]
	localClaimsPool.Put(l)
}

// localClaim reads the claim made by a flow record's local side: the local
// owner held the local address from the flow start (the time attribute, or
// the record Timestamp when absent) to the record Timestamp.
func (p *ownershipProcessor) localClaim(lr plog.LogRecord, owners *flowschema.OwnerReader) (flowschema.Claim, string) {
	attrs := lr.Attributes()
	av, ok := attrs.Get(flowschema.AttrNetworkLocalAddress)
	if !ok || av.Type() != pcommon.ValueTypeStr {
		return flowschema.Claim{}, string(flowschema.RejectMissingAddress)
	}
	addr, err := flowschema.ParseAddr(av.Str())
	if err != nil {
		return flowschema.Claim{}, string(flowschema.RejectBadAddress)
	}
	owner, ok := owners.Read(attrs, flowschema.PrefixLocalOwner)
	if !ok {
		return flowschema.Claim{}, string(flowschema.RejectMissingOwner)
	}
	if lr.Timestamp() == 0 {
		return flowschema.Claim{}, string(flowschema.RejectMissingTime)
	}
	end := lr.Timestamp().AsTime()
	start, ok := flowschema.IntTime(attrs, p.cfg.TimeAttribute)
	if !ok {
		start = end
	}
	if end.Before(start) {
		return flowschema.Claim{}, string(flowschema.RejectEndBeforeStart)
	}
	return flowschema.Claim{Address: addr, Owner: owner, Start: start, End: end}, ""
}

// checkClaim says why c is not plausible, or "" when it may be applied.
func (p *ownershipProcessor) checkClaim(c flowschema.Claim, origin int, now time.Time) string {
	switch {
	case c.End.After(now.Add(p.cfg.MaxFuture)):
		return reasonEndInFuture
	case origin == originClaim && !p.tables.mayClaim(c.Sender, c.Address):
		return reasonUnauthorized
	case !p.tables.isWorkload(c.Address):
		return reasonOutsideWorkload
	}
	return ""
}

// countApply counts the store's outcome of a checked claim standing for
// records claim records and reports whether it was applied; a claim the store
// refused is counted and changed nothing.
func (p *ownershipProcessor) countApply(res intervalstore.ApplyResult, err error, origin int, records int64, st *batchStats) bool {
	if err != nil {
		reason := reasonStoreError
		switch {
		case errors.Is(err, intervalstore.ErrExpired):
			reason = reasonExpired
		case errors.Is(err, intervalstore.ErrEndBeforeStart):
			reason = string(flowschema.RejectEndBeforeStart)
		case errors.Is(err, intervalstore.ErrEmptyOwner):
			reason = string(flowschema.RejectMissingOwner)
		}
		st.reject(origin, reason, records)
		return false
	}
	st.applied[origin] += records
	if res.Conflict {
		st.conflicts++
	}
	st.evictions += int64(res.Evicted)
	return true
}

// attributeFlows writes the peer attribution on every flow record, holding
// those that wait for a claim. It adds to b the records it held and those
// they pushed out of a full hold. The keys and times of the whole batch are
// read first, so that the store lookups are made a chunk at a time,
// together, and their cache misses overlap.
func (p *ownershipProcessor) attributeFlows(ld plog.Logs, b *consumeBatch, st *batchStats) {
	fb := flowBatchPool.Get().(*flowBatch)
	defer fb.reset()
	rls := ld.ResourceLogs()
	for i := 0; i < rls.Len(); i++ {
		sls := rls.At(i).ScopeLogs()
		for j := 0; j < sls.Len(); j++ {
			lrs := sls.At(j).LogRecords()
			for k := 0; k < lrs.Len(); k++ {
				fb.plan(p, lrs.At(k))
			}
		}
	}

	next := 0 // index in fb.flows of the record RemoveIf visits
	for i := 0; i < rls.Len(); i++ {
		rl := rls.At(i)
		var rg *resourceGroup
		sls := rl.ScopeLogs()
		for j := 0; j < sls.Len(); j++ {
			sl := sls.At(j)
			var sg *scopeGroup
			sl.LogRecords().RemoveIf(func(lr plog.LogRecord) bool {
				f := &fb.flows[next]
				next++
				if !f.flow {
					return false
				}
				attrs := lr.Attributes()
				switch {
				case f.reason != "":
					p.writeResult(attrs, intervalstore.Unattributed, nil, f.reason)
					st.lookup(intervalstore.Unattributed)
					return false
				case f.result < 0:
					if o, ok := p.tables.static.Lookup(f.key); ok {
						p.writeResult(attrs, intervalstore.Attributed, o, reasonStatic)
						st.lookup(intervalstore.Attributed)
					} else {
						p.writeResult(attrs, intervalstore.Unattributed, nil, reasonOutsideWorkload)
						st.lookup(intervalstore.Unattributed)
					}
					return false
				}
				res := fb.result(p.store, f.result)
				if p.hold != nil && waitsForClaim(res) {
					if sg == nil {
						if rg == nil {
							rg = newResourceGroup(rl)
						}
						sg = newScopeGroup(rg, sl)
					}
					r := &heldRecord{group: sg, key: f.key, at: f.at, fallback: f.fallback, since: p.clock.Now()}
					var held bool
					var pushed []releasedRecord
					if held, res, pushed = p.hold.add(&b.own, r, lr, p.lookup); held {
						st.heldChange++
						b.released = append(b.released, pushed...)
						return true
					}
				}
				p.writeLookup(attrs, res, f.fallback)
				st.lookup(res.Status)
				return false
			})
		}
	}
}

// flowBatch holds what attributeFlows reads from a batch's records before
// it answers them: one flowPlan per record, in batch order, the store
// queries of those that need one, and the answers so far.
type flowBatch struct {
	flows   []flowPlan
	queries []intervalstore.Query[intervalstore.Key128]
	results []intervalstore.Result
}

type flowPlan struct {
	flow     bool // a flow record; the other fields are set only then
	key      netip.Addr
	at       time.Time
	fallback bool
	reason   string // why the record cannot be looked up, or ""
	result   int    // index in results, -1 when key is outside workload_cidrs
}

var flowBatchPool = sync.Pool{New: func() any { return new(flowBatch) }}

func (fb *flowBatch) plan(p *ownershipProcessor, lr plog.LogRecord) {
	f := flowPlan{result: -1}
	if lr.EventName() == flowschema.EventFlow {
		f.flow = true
		f.key, f.at, f.fallback, f.reason = p.flowQuery(lr)
		if f.reason == "" && p.tables.isWorkload(f.key) {
			f.result = len(fb.queries)
			fb.queries = append(fb.queries, intervalstore.Query[intervalstore.Key128]{Key: intervalstore.AddrKey(f.key), At: f.at})
		}
	}
	fb.flows = append(fb.flows, f)
}

// lookupChunk is how many queries flowBatch.result answers at a time: enough
// for LookupBatch to overlap their cache misses, few enough that what it
// brought into the caches is still there when the records are written.
const lookupChunk = 64

// result returns the answer to query i, looking up the chunk it falls in
// when needed. Queries are answered in order.
func (fb *flowBatch) result(store *intervalstore.Store[intervalstore.Key128], i int) intervalstore.Result {
	for i >= len(fb.results) {
		n := min(len(fb.results)+lookupChunk, len(fb.queries))
		fb.results = store.LookupBatch(fb.queries[len(fb.results):n], fb.results)
	}
	return fb.results[i]
}

func (fb *flowBatch) reset() {
	fb.flows = fb.flows[:0]
	fb.queries = fb.queries[:0]
	clear(fb.results) // drop references to owners
	fb.results = fb.results[:0]
	flowBatchPool.Put(fb)
}

// flowQuery reads the key and lookup time of a flow record, in one pass over
// its attributes. reason is set when the record cannot be looked up.
func (p *ownershipProcessor) flowQuery(lr plog.LogRecord) (key netip.Addr, at time.Time, fallback bool, reason string) {
	var kv, tv pcommon.Value
	var hasKey, hasTime bool
	// The first of repeated keys counts, as for Map.Get.
	for k, v := range lr.Attributes().All() {
		if !hasKey && k == p.cfg.KeyAttribute {
			kv, hasKey = v, true
		} else if !hasTime && k == p.cfg.TimeAttribute {
			tv, hasTime = v, true
		}
		if hasKey && hasTime {
			break
		}
	}
	if !hasKey {
		return key, at, false, reasonMissingKey
	}
	if kv.Type() != pcommon.ValueTypeStr {
		return key, at, false, reasonBadKey
	}
	key, err := flowschema.ParseAddr(kv.Str())
	if err != nil {
		return key, at, false, reasonBadKey
	}
	if hasTime {
		if tv.Type() != pcommon.ValueTypeInt || tv.Int() <= 0 {
			return key, at, false, reasonBadTime
		}
		return key, time.Unix(0, tv.Int()), false, ""
	}
	if lr.Timestamp() == 0 {
		return key, at, false, reasonMissingTime
	}
	return key, lr.Timestamp().AsTime(), true, ""
}

func (p *ownershipProcessor) writeLookup(attrs pcommon.Map, res intervalstore.Result, fallback bool) {
	reason := res.Reason.String()
	if res.Status == intervalstore.Attributed && fallback {
		reason = reasonTimestampUsed
	}
	p.writeResult(attrs, res.Status, res.Owner, reason)
}

// Bits of what writeResult has written, in its mask: the status, the
// reason, the owner ID, then one bit per owner attribute.
const (
	wroteStatus = 1 << iota
	wroteReason
	wroteOwnerID
	wroteFirstOwnerAttr
	maxOwnerAttrsInPlace = 64 - 3 // owner attributes that fit the mask
)

// writeResult replaces whatever the record carried under the owner prefix,
// so that a stale or forged owner never survives an unattributed result.
// One pass over the attributes rewrites the keys the result writes in place
// and removes the other owner keys; only keys the record lacked are added.
func (p *ownershipProcessor) writeResult(attrs pcommon.Map, status intervalstore.Status, owner *owners.Owner, reason string) {
	prefix := p.owners.Prefix()
	var o owners.Owner
	if owner != nil {
		o = *owner
	}
	if len(o.Attributes) > maxOwnerAttrsInPlace {
		attrs.RemoveIf(func(k string, _ pcommon.Value) bool { return strings.HasPrefix(k, prefix) })
		attrs.Remove(flowschema.AttrPeerAttributionReason)
		p.owners.Put(attrs, o)
		p.putStatus(attrs, status, reason, 0)
		return
	}
	var wrote uint64
	attrs.RemoveIf(func(k string, v pcommon.Value) bool {
		var bit uint64
		switch {
		case k == flowschema.AttrPeerAttributionStatus:
			bit = wroteStatus
			if wrote&bit == 0 {
				v.SetStr(status.String())
			}
		case k == flowschema.AttrPeerAttributionReason:
			if reason == "" {
				return true
			}
			bit = wroteReason
			if wrote&bit == 0 {
				v.SetStr(reason)
			}
		case !strings.HasPrefix(k, prefix):
			return false
		case owner == nil:
			return true
		case k == p.owners.IDKey():
			bit = wroteOwnerID
			if wrote&bit == 0 {
				v.SetStr(o.ID)
			}
		default:
			i := slices.IndexFunc(o.Attributes, func(a owners.Attribute) bool { return a.Name == k[len(prefix):] })
			if i < 0 {
				return true
			}
			bit = wroteFirstOwnerAttr << i
			if wrote&bit == 0 {
				v.SetStr(o.Attributes[i].Value)
			}
		}
		if wrote&bit != 0 {
			return true // a repeated key
		}
		wrote |= bit
		return false
	})
	if owner != nil {
		if wrote&wroteOwnerID == 0 {
			attrs.PutStr(p.owners.IDKey(), o.ID)
		}
		for i, a := range o.Attributes {
			if wrote&(wroteFirstOwnerAttr<<i) == 0 {
				attrs.PutStr(p.owners.Key(a.Name), a.Value)
			}
		}
	}
	p.putStatus(attrs, status, reason, wrote)
}

// putStatus adds the status and reason attributes unless wrote says they
// are written already.
func (p *ownershipProcessor) putStatus(attrs pcommon.Map, status intervalstore.Status, reason string, wrote uint64) {
	if wrote&wroteStatus == 0 {
		attrs.PutStr(flowschema.AttrPeerAttributionStatus, status.String())
	}
	if reason != "" && wrote&wroteReason == 0 {
		attrs.PutStr(flowschema.AttrPeerAttributionReason, reason)
	}
}

// emit writes the final attribution on released records and appends them to
// ld under their original Resource and Scope.
func (p *ownershipProcessor) emit(ctx context.Context, released []releasedRecord, ld plog.Logs, st *batchStats) {
	now := p.clock.Now()
	g := newRegrouper(ld)
	for _, r := range released {
		attrs := r.record.Attributes()
		if r.outcome == outcomeOverflow {
			p.writeResult(attrs, intervalstore.Unattributed, nil, reasonHoldOverflow)
		} else {
			p.writeLookup(attrs, r.result, r.fallback)
		}
		st.lookup(r.result.Status)
		st.heldChange--
		p.tel.ProcessorOwnershipRecordsReleased.Add(ctx, 1, p.outcomeAttrs[r.outcome])
		p.tel.ProcessorOwnershipHoldDuration.Record(ctx, now.Sub(r.since).Seconds())
		g.add(r.heldRecord)
	}
}

// send emits released records in a batch of their own; a refusal is counted
// and logged.
func (p *ownershipProcessor) send(ctx context.Context, released []releasedRecord) {
	if len(released) == 0 {
		return
	}
	var st batchStats
	ld := plog.NewLogs()
	p.emit(ctx, released, ld, &st)
	p.report(ctx, &st)
	if err := p.forward(ctx, ld); err != nil {
		n := ld.LogRecordCount()
		p.tel.ProcessorOwnershipReleaseFailures.Add(ctx, int64(n))
		p.logger.Warn("Next consumer refused released flow records", zap.Int("records", n), zap.Error(err))
	}
}

// lookup answers who held addr at t.
func (p *ownershipProcessor) lookup(addr netip.Addr, t time.Time) intervalstore.Result {
	return p.store.Lookup(intervalstore.AddrKey(addr), t)
}

func (p *ownershipProcessor) recheck(ctx context.Context, keys []netip.Addr) {
	if p.hold != nil && p.startOutside() {
		defer p.outside.Done()
		p.send(ctx, p.hold.recheck(keys, p.lookup))
	}
}

// startOutside reports whether a release from outside this pipeline's
// ConsumeLogs may start, and counts it if so; the caller calls
// p.outside.Done when it is over. Once shutdown has begun, none may: the
// records stay held, for shutdown to drain.
func (p *ownershipProcessor) startOutside() bool {
	p.outsideMu.Lock()
	defer p.outsideMu.Unlock()
	if p.stopping {
		return false
	}
	p.outside.Add(1)
	return true
}

func (p *ownershipProcessor) releaseExpired(ctx context.Context, now time.Time) {
	if p.hold != nil && p.startOutside() {
		defer p.outside.Done()
		p.send(ctx, p.hold.expire(now, p.lookup))
	}
}

// shutdown flushes every held record downstream, then releases the shared
// store. It runs once however often it is called.
func (p *ownershipProcessor) shutdown(ctx context.Context) {
	p.shutdownOnce.Do(func() {
		p.shared.unsubscribe(p)
		p.outsideMu.Lock()
		p.stopping = true
		p.outsideMu.Unlock()
		p.outside.Wait()
		if p.hold != nil {
			p.send(ctx, p.hold.drain(p.lookup))
		}
		p.tel.Shutdown()
		p.stores.release(p.id)
	})
}

func (p *ownershipProcessor) report(ctx context.Context, st *batchStats) {
	for o, n := range st.applied {
		if n > 0 {
			p.tel.ProcessorOwnershipClaimsApplied.Add(ctx, n, p.originAttrs[o])
		}
	}
	for _, r := range st.rejected {
		p.tel.ProcessorOwnershipClaimsRejected.Add(ctx, r.n, metric.WithAttributes(
			attribute.String("origin", originNames[r.origin]), attribute.String("reason", r.reason)))
	}
	if st.conflicts > 0 {
		p.tel.ProcessorOwnershipConflicts.Add(ctx, st.conflicts)
	}
	if st.evictions > 0 {
		p.tel.ProcessorOwnershipEvictions.Add(ctx, st.evictions)
	}
	for s, n := range st.lookups {
		if n > 0 {
			p.tel.ProcessorOwnershipLookups.Add(ctx, n, p.statusAttrs[s])
		}
	}
	if st.heldChange != 0 {
		p.tel.ProcessorOwnershipRecordsHeld.Add(ctx, st.heldChange)
	}
}

// removeEmpty drops the scopes and resources left without records.
func removeEmpty(ld plog.Logs) {
	ld.ResourceLogs().RemoveIf(func(rl plog.ResourceLogs) bool {
		rl.ScopeLogs().RemoveIf(func(sl plog.ScopeLogs) bool { return sl.LogRecords().Len() == 0 })
		return rl.ScopeLogs().Len() == 0
	})
}
