package fleetsim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/clock"
	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/intervalstore"
	"github.com/flowattr/flowattr/internal/owners"
)

// Clock is the virtual clock the simulation advances; it is the processor's
// time source, and setting it runs the processor's background work that
// falls due. Safe for concurrent reads.
type Clock struct {
	*clock.Manual
	ns atomic.Int64
}

func newClock() *Clock { return &Clock{Manual: clock.NewManual(Epoch)} }

func (c *Clock) set(ns int64) {
	c.ns.Store(ns)
	c.Set(Epoch.Add(time.Duration(ns)))
}

// Result is the score of one run.
type Result struct {
	Scenario Scenario
	// Flows is the number of flow records handed to both paths;
	// LocalUnowned those whose host named no local owner on them.
	Flows        int
	LocalUnowned int
	// Ownership scores the ownership processor's output; Baseline the
	// event-based current-owner map on the same flows.
	Ownership Counts
	Baseline  Counts
	// Lost counts flows that never came out of the processor, Duplicated
	// output records of an already scored flow, Unknown output records that
	// match no flow.
	Lost, Duplicated, Unknown int
	// Claim records sent by hosts, dropped and duplicated in transit.
	ClaimsSent, ClaimsLost, ClaimsDuplicated int
	// Simulated is the simulated time the run covered; Elapsed the wall
	// time it took.
	Simulated time.Duration
	Elapsed   time.Duration
	// Held counts flow records the processor sent on in a later tick than
	// the one they arrived in; HoldP50 and HoldP99 are percentiles of their
	// hold time, in ticks (records held past the end of the run count at
	// the run's end).
	Held             int
	HoldP50, HoldP99 time.Duration
}

// Kinds of generation event.
const (
	evOwnership     uint8 = iota // an address's workload ends, or a new one starts
	evClaimInterval              // a host closes its claim interval and sends the claims
	evFlowStart                  // the next flow starts
	evFlowEnd                    // a flow ends and its record is emitted
)

type genEvent struct {
	at   int64
	seq  uint64
	kind uint8
	idx  int32 // address or host
	flow *flow
}

// genKey orders generation events by time, then flow ends first, then in
// the order they were scheduled: a connection closes as its workload ends,
// before the host's ownership source drops the workload.
func genKey(e *genEvent) (int64, uint64) {
	if e.kind == evFlowEnd {
		return e.at, e.seq
	}
	return e.at, 1<<63 | e.seq
}

// flow is one connection, recorded by one of its two ends (the local side).
type flow struct {
	id         uint64
	local      *segment
	peer       *segment // the truth: who owned the peer address at start
	start, end int64    // true time
	skew       int64    // the recording host's clock offset
	client     bool     // the recording side opened the connection
	// localOwner is the owner the recording host named on the record, none
	// (empty ID) when it did not hold the address throughout the flow.
	localOwner owners.Owner
	localPort  int64
	peerPort   int64
	arrived    int64 // when the processor got the record
}

type deferredRecord struct {
	at       int64 // the record's deadline: arrival + max_wait
	seq      uint64
	f        *flow
	nearEdge bool // reason near_unclaimed_edge
}

// runner is the state of one run.
type runner struct {
	sc      Scenario
	clock   *Clock
	fleet   *fleet
	net     *network
	flowRNG *rand.Rand
	gen     timedHeap[genEvent]
	genSeq  uint64
	oracle  *coverageOracle
	// baseline is the event-based map: address -> workload ID, 0 if none.
	baseline []int64

	started, active int
	nextFlowID      uint64
	pending         map[uint64]*flow
	deferred        timedHeap[deferredRecord]
	deferSeq        uint64
	holdTicks       []int // held records by hold time in ticks
	res             Result
}

// Run simulates sc, drives the ownership processor with it, and scores the
// processor and the baseline.
func Run(ctx context.Context, sc Scenario) (Result, error) {
	if err := sc.Validate(); err != nil {
		return Result{}, fmt.Errorf("scenario %q: %w", sc.Name, err)
	}
	began := time.Now()
	r := newRunner(sc)
	sink := new(consumertest.LogsSink)
	proc, err := newProcessor(ctx, sc, r.clock, sink)
	if err != nil {
		return Result{}, fmt.Errorf("scenario %q: creating the processor: %w", sc.Name, err)
	}
	runErr := r.start(ctx)
	if runErr == nil {
		runErr = r.loop(ctx, proc, sink)
	}
	for i := range r.fleet.hosts {
		if own := r.fleet.hosts[i].own; own != nil {
			runErr = errors.Join(runErr, own.Shutdown())
		}
	}
	// Shutdown flushes the records still held.
	if err := proc.Shutdown(ctx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("shutdown: %w", err))
	}
	if err := r.score(sink); err != nil {
		runErr = errors.Join(runErr, err)
	}
	r.classifyDeferred(1<<63 - 1)
	r.res.Lost = len(r.pending)
	r.res.ClaimsSent, r.res.ClaimsLost, r.res.ClaimsDuplicated = r.net.sent, r.net.lost, r.net.duplicated
	r.res.HoldP50, r.res.HoldP99 = r.holdPercentile(0.50), r.holdPercentile(0.99)
	r.res.Simulated = time.Duration(r.clock.ns.Load())
	r.res.Elapsed = time.Since(began)
	if runErr != nil {
		return r.res, fmt.Errorf("scenario %q: %w", sc.Name, runErr)
	}
	return r.res, nil
}

func newRunner(sc Scenario) *runner {
	return &runner{
		sc:       sc,
		clock:    newClock(),
		fleet:    newFleet(&sc),
		net:      newNetwork(&sc),
		flowRNG:  rand.New(rand.NewPCG(sc.Seed, 3)),
		gen:      timedHeap[genEvent]{key: genKey},
		baseline: make([]int64, sc.IPs),
		pending:  make(map[uint64]*flow),
		deferred: timedHeap[deferredRecord]{key: func(d *deferredRecord) (int64, uint64) { return d.at, d.seq }},
		// The oracle remembers claims as long as a flow record could still
		// refer to them, longer than the processor's retention, so that a
		// claim the processor forgot counts as unused rather than as never
		// known.
		oracle: newCoverageOracle(sc.IPs, int64(sc.Processor.Retention+sc.MaxFlowDuration+sc.Processor.MaxWait)),
		res:    Result{Scenario: sc},
	}
}

func (r *runner) schedule(e genEvent) {
	r.genSeq++
	e.seq = r.genSeq
	r.gen.push(e)
}

// start puts a workload on every address, starts the hosts at true time
// zero, and schedules the first events.
func (r *runner) start(ctx context.Context) error {
	sc := &r.sc
	for ip := range r.fleet.addrs {
		// Every address starts occupied by a workload of random age.
		seg := r.fleet.startSegment(int32(ip), -r.fleet.exp(sc.MeanLifetime), r.fleet.exp(sc.MeanLifetime))
		r.baseline[ip] = seg.id
		r.schedule(genEvent{at: seg.end, kind: evOwnership, idx: int32(ip)})
	}
	// The hosts start at true time zero: the workloads they hold then are
	// initial.
	for i := range r.fleet.hosts {
		h := &r.fleet.hosts[i]
		if err := h.start(ctx, r.fleet); err != nil {
			return fmt.Errorf("starting %s: %w", h.name, err)
		}
		r.schedule(genEvent{at: h.nextClose, kind: evClaimInterval, idx: int32(i)})
	}
	if sc.Flows > 0 {
		r.schedule(genEvent{at: int64(sc.Warmup) + r.nextArrival(), kind: evFlowStart})
	}
	return nil
}

// loop advances the clock tick by tick, runs the fleet and hands what
// arrives to the processor, until every flow has been scored.
func (r *runner) loop(ctx context.Context, proc consumer.Logs, sink *consumertest.LogsSink) error {
	sc := &r.sc
	// Past this, something is stuck: stop and let Shutdown flush.
	limit := int64(sc.Warmup+2*sc.Duration+sc.MaxFlowDuration+sc.Claims.Delay+sc.Claims.Jitter+
		sc.Claims.ReorderSpan+sc.FlowJitter+sc.Processor.MaxWait) + int64(time.Hour)
	tick := int64(sc.Tick)
	for now := tick; ; now += tick {
		if err := ctx.Err(); err != nil {
			return err
		}
		r.clock.set(now)
		if err := r.generate(now); err != nil {
			return err
		}
		// Every tick, records or not, as a pipeline that receives batches
		// steadily.
		if err := proc.ConsumeLogs(ctx, r.deliver(now)); err != nil {
			return fmt.Errorf("ConsumeLogs at %s: %w", time.Duration(now), err)
		}
		if err := r.score(sink); err != nil {
			return err
		}
		r.classifyDeferred(now)
		if r.started == sc.Flows && r.active == 0 && r.net.flows == 0 && len(r.pending) == 0 && r.deferred.Len() == 0 {
			return nil
		}
		if now > limit {
			return nil
		}
	}
}

func (r *runner) nextArrival() int64 {
	rate := float64(r.sc.Flows) / r.sc.Duration.Seconds()
	return max(1, int64(r.flowRNG.ExpFloat64()/rate*float64(time.Second)))
}

// generate runs the fleet up to now: ownership changes, claim intervals,
// flow starts and ends, each sent on its way in true-time order.
func (r *runner) generate(now int64) error {
	for r.gen.Len() > 0 && r.gen.peekAt() <= now {
		e := r.gen.pop()
		r.fleet.now = e.at
		switch e.kind {
		case evOwnership:
			if r.fleet.addrs[e.idx].cur != nil {
				seg := r.fleet.endSegment(e.idx)
				r.net.sendClaim(e.at, message{kind: msgUnassign, seg: seg})
				r.schedule(genEvent{at: e.at + r.fleet.reuseGap(), kind: evOwnership, idx: e.idx})
				continue
			}
			seg := r.fleet.startSegment(e.idx, e.at, e.at+r.fleet.exp(r.sc.MeanLifetime))
			r.net.sendClaim(e.at, message{kind: msgAssign, seg: seg})
			r.schedule(genEvent{at: seg.end, kind: evOwnership, idx: e.idx})
		case evClaimInterval:
			h := &r.fleet.hosts[e.idx]
			for _, c := range h.claimer.CloseInterval(h.wallTime(e.at)) {
				r.net.sendClaim(e.at, message{kind: msgClaim, claim: c.Claim})
			}
			h.nextClose += int64(r.sc.ClaimInterval)
			r.schedule(genEvent{at: h.nextClose, kind: evClaimInterval, idx: e.idx})
		case evFlowStart:
			f, err := r.startFlow(e.at)
			if err != nil {
				return err
			}
			r.active++
			r.schedule(genEvent{at: f.end, kind: evFlowEnd, flow: f})
			if r.started < r.sc.Flows {
				r.schedule(genEvent{at: e.at + r.nextArrival(), kind: evFlowStart})
			}
		case evFlowEnd:
			r.active--
			f := e.flow
			if !r.fleet.hosts[f.local.host].endFlow(f, r.fleet.addrs[f.local.ip].addr) {
				r.res.LocalUnowned++
			}
			r.net.sendFlow(e.at, f)
		}
	}
	return nil
}

// pickOccupied returns the workload on a random occupied address other than
// exclude.
func (r *runner) pickOccupied(exclude int32) (*segment, error) {
	for range 1000 {
		ip := int32(r.flowRNG.IntN(len(r.fleet.addrs)))
		if seg := r.fleet.addrs[ip].cur; ip != exclude && seg != nil {
			return seg, nil
		}
	}
	return nil, errors.New("no occupied address found in 1000 draws: MaxReuseGap is too long for MeanLifetime")
}

func (r *runner) startFlow(at int64) (*flow, error) {
	local, err := r.pickOccupied(-1)
	if err != nil {
		return nil, err
	}
	peer, err := r.pickOccupied(local.ip)
	if err != nil {
		return nil, err
	}
	r.started++
	r.nextFlowID++
	// A connection dies with either workload.
	end := min(at+sampleDuration(r.flowRNG, r.sc.MaxFlowDuration), local.end, peer.end)
	f := &flow{
		id:     r.nextFlowID,
		local:  local,
		peer:   peer,
		start:  at,
		end:    end,
		skew:   r.fleet.hosts[local.host].skew,
		client: r.flowRNG.IntN(2) == 0,
	}
	ephemeral, service := 32768+r.flowRNG.Int64N(28232), 8000+r.flowRNG.Int64N(100)
	if f.client {
		f.localPort, f.peerPort = ephemeral, service
	} else {
		f.localPort, f.peerPort = service, ephemeral
	}
	return f, nil
}

// deliver hands everything due by now to the baseline and the oracle, and
// returns the batch for the processor.
func (r *runner) deliver(now int64) plog.Logs {
	ld := plog.NewLogs()
	records := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	for {
		m, ok := r.net.due(now)
		if !ok {
			return ld
		}
		switch m.kind {
		case msgClaim:
			c := &m.claim
			flowschema.PutClaim(records.AppendEmpty(), *c)
			r.oracle.add(ipIndex(c.Address), workloadID(c.Owner.ID), c.Start.Sub(Epoch).Nanoseconds(), c.End.Sub(Epoch).Nanoseconds(), now)
		case msgFlow:
			f := m.flow
			f.arrived = now
			r.pending[f.id] = f
			r.res.Flows++
			r.putFlow(records.AppendEmpty(), f)
			r.res.Baseline.add(r.baselineOutcome(f))
			if f.localOwner.ID != "" {
				// The record's local side is a claim too.
				r.oracle.add(f.local.ip, workloadID(f.localOwner.ID), f.start+f.skew, f.end+f.skew, now)
			}
		case msgAssign:
			r.baseline[m.seg.ip] = m.seg.id
		case msgUnassign:
			// A careful baseline: an unassign only clears its own workload.
			if r.baseline[m.seg.ip] == m.seg.id {
				r.baseline[m.seg.ip] = 0
			}
		}
	}
}

// baselineOutcome attributes f to whatever the event-based map says when
// the record arrives.
func (r *runner) baselineOutcome(f *flow) Outcome {
	switch cur := r.baseline[f.peer.ip]; cur {
	case 0:
		return OutcomeUnattributed
	case f.peer.id:
		return OutcomeCorrect
	default:
		return OutcomeMisattributed
	}
}

// putFlow writes the record the recording host's receiver would emit for f,
// times on that host's clock.
func (r *runner) putFlow(lr plog.LogRecord, f *flow) {
	lr.SetEventName(flowschema.EventFlow)
	lr.SetTimestamp(pcommon.Timestamp(Epoch.UnixNano() + f.end + f.skew))
	attrs := lr.Attributes()
	attrs.EnsureCapacity(14)
	local, peer := &r.fleet.addrs[f.local.ip], &r.fleet.addrs[f.peer.ip]
	attrs.PutStr(flowschema.AttrNetworkTransport, "tcp")
	attrs.PutStr(flowschema.AttrNetworkType, "ipv4")
	attrs.PutStr(flowschema.AttrNetworkLocalAddress, local.text)
	attrs.PutInt(flowschema.AttrNetworkLocalPort, f.localPort)
	attrs.PutStr(flowschema.AttrNetworkPeerAddress, peer.text)
	attrs.PutInt(flowschema.AttrNetworkPeerPort, f.peerPort)
	role := flowschema.RoleServer
	if f.client {
		role = flowschema.RoleClient
	}
	attrs.PutStr(flowschema.AttrFlowRole, role)
	attrs.PutStr(flowschema.AttrFlowState, flowschema.FlowStateClosed)
	attrs.PutInt(flowschema.AttrFlowStartTime, Epoch.UnixNano()+f.start+f.skew)
	attrs.PutInt(AttrFlowID, int64(f.id))
	if f.localOwner.ID != "" {
		flowschema.PutOwner(attrs, flowschema.PrefixLocalOwner, f.localOwner)
	}
}

// score takes the processor's output from sink and scores each record.
func (r *runner) score(sink *consumertest.LogsSink) error {
	if sink.LogRecordCount() == 0 {
		return nil
	}
	batches := sink.AllLogs()
	sink.Reset()
	var errs []error
	for _, ld := range batches {
		for _, rl := range ld.ResourceLogs().All() {
			for _, sl := range rl.ScopeLogs().All() {
				for _, lr := range sl.LogRecords().All() {
					if lr.EventName() != flowschema.EventFlow {
						continue
					}
					id, status, reason, ownerID, err := readAttribution(lr)
					if err != nil {
						errs = append(errs, err)
						continue
					}
					r.scoreRecord(id, status, reason, ownerID)
				}
			}
		}
	}
	return errors.Join(errs...)
}

func (r *runner) scoreRecord(id uint64, status, reason, ownerID string) {
	f, ok := r.pending[id]
	if !ok {
		if id >= 1 && id <= r.nextFlowID {
			r.res.Duplicated++
		} else {
			r.res.Unknown++
		}
		return
	}
	delete(r.pending, id)
	if ticks := int((r.clock.ns.Load() - f.arrived) / int64(r.sc.Tick)); ticks > 0 {
		r.res.Held++
		if ticks >= len(r.holdTicks) {
			r.holdTicks = append(r.holdTicks, make([]int, ticks+1-len(r.holdTicks))...)
		}
		r.holdTicks[ticks]++
	}
	o := classifyAttribution(status, ownerID, f.peer.owner.ID)
	if o != OutcomeUnattributed {
		r.res.Ownership.add(o)
		return
	}
	r.deferSeq++
	r.deferred.push(deferredRecord{
		at: f.arrived + int64(r.sc.Processor.MaxWait), seq: r.deferSeq, f: f,
		nearEdge: reason == intervalstore.ReasonNearUnclaimedEdge.String(),
	})
}

// holdPercentile returns the hold time below which fraction q of the held
// records stayed.
func (r *runner) holdPercentile(q float64) time.Duration {
	need := int(q*float64(r.res.Held) + 0.5)
	seen := 0
	for ticks, n := range r.holdTicks {
		if seen += n; n > 0 && seen >= need {
			return time.Duration(ticks) * r.sc.Tick
		}
	}
	return 0
}

// classifyDeferred splits the unattributed records whose deadline has passed:
// was a claim of the true owner covering the recorded start delivered in time?
func (r *runner) classifyDeferred(now int64) {
	for r.deferred.Len() > 0 && r.deferred.peekAt() <= now {
		d := r.deferred.pop()
		f := d.f
		r.res.Ownership.add(splitUnattributed(r.oracle.covered(f.peer.ip, f.peer.id, f.start+f.skew), d.nearEdge))
	}
}
