package fleetsim

import (
	"context"
	"net/netip"
	"time"

	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/intervalstore"
)

// NewStoreAttribution is the heartbeat path built directly on
// internal/intervalstore, following the ownership processor's algorithm
// (processor.go and hold.go at commit 64e52b9) step by step: heartbeats and
// the local side of flow records are applied as claims (claims ending past
// now+1m are refused, as the processor's max_future default does), each
// flow's peer is looked up at its recorded start, and a record whose lookup a
// later claim could still change (no claim yet, after, before or between
// ranges) is held until a claim for its address arrives or max_wait passes.
//
// It stands in for the processor because the processor offers no clock that
// another package can inject and releases expired records only from a
// goroutine on a wall-clock ticker (see docs/evaluation.md). It scores the
// algorithm and the real store, not the processor's pipeline plumbing.
func NewStoreAttribution(sc Scenario, clock *Clock, next *consumertest.LogsSink) (Attribution, error) {
	return newStoreAttribution(sc, clock, next, false)
}

// NewStoreAttributionEdgeHold is NewStoreAttribution plus one rule the
// processor lacks: an attribution whose clock_skew neighbourhood is not yet
// covered by any claim is held like an unattributed record, because the
// claim of the previous or next owner that would make it uncertain may still
// be on its way. At max_wait such a record is sent on unattributed
// (not_yet_covered): the claim may have been lost.
func NewStoreAttributionEdgeHold(sc Scenario, clock *Clock, next *consumertest.LogsSink) (Attribution, error) {
	return newStoreAttribution(sc, clock, next, true)
}

func newStoreAttribution(sc Scenario, clock *Clock, next *consumertest.LogsSink, edgeHold bool) (Attribution, error) {
	store, err := intervalstore.New[netip.Addr](intervalstore.Config{
		MergeGap:  sc.Processor.MergeGap,
		ClockSkew: sc.Processor.ClockSkew,
		Retention: sc.Processor.Retention,
		MaxKeys:   max(sc.IPs, 1),
		Now:       clock.Now,
	})
	if err != nil {
		return nil, err
	}
	return &storeAttribution{
		store:    store,
		clock:    clock,
		next:     next,
		maxWait:  sc.Processor.MaxWait,
		skew:     sc.Processor.ClockSkew,
		edgeHold: edgeHold,
		byKey:    make(map[netip.Addr][]*heldFlow),
	}, nil
}

// storeMaxFuture mirrors the processor's max_future default.
const storeMaxFuture = time.Minute

type heldFlow struct {
	lr    plog.LogRecord
	key   netip.Addr
	at    time.Time
	since time.Time
	done  bool
}

type storeAttribution struct {
	store     *intervalstore.Store[netip.Addr]
	clock     *Clock
	next      *consumertest.LogsSink
	maxWait   time.Duration
	skew      time.Duration
	edgeHold  bool
	queue     []*heldFlow // arrival order, which is deadline order
	byKey     map[netip.Addr][]*heldFlow
	lastPrune time.Time
}

func (a *storeAttribution) ConsumeLogs(ctx context.Context, ld plog.Logs) error {
	now := a.clock.Now()
	out := plog.NewLogs()
	records := out.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	var touched []netip.Addr
	for _, rl := range ld.ResourceLogs().All() {
		for _, sl := range rl.ScopeLogs().All() {
			for _, lr := range sl.LogRecords().All() {
				var c flowschema.Claim
				switch lr.EventName() {
				case flowschema.EventHeartbeat:
					var err error
					if c, err = flowschema.ParseClaim(lr); err != nil {
						continue
					}
				case flowschema.EventFlow:
					var ok bool
					if c, ok = localClaim(lr); !ok {
						continue
					}
				default:
					continue
				}
				if c.End.After(now.Add(storeMaxFuture)) {
					continue
				}
				if _, err := a.store.Apply(c.Address, c.Owner, c.Start, c.End); err == nil {
					touched = append(touched, c.Address)
				}
			}
		}
	}
	for _, rl := range ld.ResourceLogs().All() {
		for _, sl := range rl.ScopeLogs().All() {
			for _, lr := range sl.LogRecords().All() {
				if lr.EventName() != flowschema.EventFlow {
					continue
				}
				key, at, ok := peerQuery(lr)
				if !ok {
					writeAttribution(lr.Attributes(), intervalstore.Result{Status: intervalstore.Unattributed})
					lr.CopyTo(records.AppendEmpty())
					continue
				}
				res := a.lookup(key, at)
				if a.maxWait > 0 && waitsForClaim(res) {
					h := &heldFlow{lr: plog.NewLogRecord(), key: key, at: at, since: now}
					lr.CopyTo(h.lr)
					a.queue = append(a.queue, h)
					a.byKey[key] = append(a.byKey[key], h)
					continue
				}
				writeAttribution(lr.Attributes(), res)
				lr.CopyTo(records.AppendEmpty())
			}
		}
	}
	for _, k := range touched {
		list := a.byKey[k]
		kept := list[:0]
		for _, h := range list {
			if res := a.lookup(h.key, h.at); !waitsForClaim(res) {
				a.release(h, res, records)
				continue
			}
			kept = append(kept, h)
		}
		a.setKey(k, kept)
	}
	return a.send(ctx, out)
}

func (a *storeAttribution) setKey(k netip.Addr, list []*heldFlow) {
	if len(list) == 0 {
		delete(a.byKey, k)
		return
	}
	a.byKey[k] = list
}

func (a *storeAttribution) release(h *heldFlow, res intervalstore.Result, records plog.LogRecordSlice) {
	h.done = true
	writeAttribution(h.lr.Attributes(), res)
	h.lr.MoveTo(records.AppendEmpty())
}

// Advance releases held records whose wait is over and prunes the store
// once a simulated minute.
func (a *storeAttribution) Advance(ctx context.Context) error {
	now := a.clock.Now()
	if now.Sub(a.lastPrune) >= time.Minute {
		a.store.Prune()
		a.lastPrune = now
	}
	return a.flush(ctx, func(h *heldFlow) bool { return !now.Before(h.since.Add(a.maxWait)) })
}

func (a *storeAttribution) Shutdown(ctx context.Context) error {
	return a.flush(ctx, func(*heldFlow) bool { return true })
}

// flush releases, in arrival order, the held records for which due holds.
func (a *storeAttribution) flush(ctx context.Context, due func(*heldFlow) bool) error {
	out := plog.NewLogs()
	records := out.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	i := 0
	for ; i < len(a.queue); i++ {
		h := a.queue[i]
		if h.done {
			continue
		}
		if !due(h) {
			break
		}
		a.release(h, a.lookup(h.key, h.at), records)
		list := a.byKey[h.key]
		for j, x := range list {
			if x == h {
				list = append(list[:j], list[j+1:]...)
				break
			}
		}
		a.setKey(h.key, list)
	}
	clear(a.queue[:i])
	a.queue = a.queue[i:]
	return a.send(ctx, out)
}

func (a *storeAttribution) send(ctx context.Context, out plog.Logs) error {
	if out.LogRecordCount() == 0 {
		return nil
	}
	return a.next.ConsumeLogs(ctx, out)
}

// lookup is the store's lookup, with the edge hold when enabled: an
// attribution at t is reported as not yet covered while t-clock_skew or
// t+clock_skew is covered by no claim at all.
func (a *storeAttribution) lookup(key netip.Addr, at time.Time) intervalstore.Result {
	res := a.store.Lookup(key, at)
	if a.edgeHold && res.Status == intervalstore.Attributed &&
		(waitsForClaim(a.store.Lookup(key, at.Add(-a.skew))) || waitsForClaim(a.store.Lookup(key, at.Add(a.skew)))) {
		return intervalstore.Result{Status: intervalstore.Unattributed, Reason: intervalstore.ReasonAfterLastClaim}
	}
	return res
}

// waitsForClaim: only a missing claim can change these lookups later.
func waitsForClaim(r intervalstore.Result) bool {
	if r.Status != intervalstore.Unattributed {
		return false
	}
	switch r.Reason {
	case intervalstore.ReasonNoClaim, intervalstore.ReasonAfterLastClaim,
		intervalstore.ReasonBeforeFirstClaim, intervalstore.ReasonGap:
		return true
	}
	return false
}

// localClaim reads the claim a flow record makes for its local address.
func localClaim(lr plog.LogRecord) (flowschema.Claim, bool) {
	attrs := lr.Attributes()
	av, ok := attrs.Get(flowschema.AttrNetworkLocalAddress)
	if !ok {
		return flowschema.Claim{}, false
	}
	addr, err := flowschema.ParseAddr(av.Str())
	if err != nil {
		return flowschema.Claim{}, false
	}
	owner, ok := flowschema.ReadOwner(attrs, flowschema.PrefixLocalOwner)
	start, okStart := flowschema.IntTime(attrs, flowschema.AttrFlowStartTime)
	end := lr.Timestamp().AsTime()
	if !ok || !okStart || lr.Timestamp() == 0 || end.Before(start) {
		return flowschema.Claim{}, false
	}
	return flowschema.Claim{Address: addr, Owner: owner, Start: start, End: end}, true
}

// peerQuery reads a flow record's peer address and start time.
func peerQuery(lr plog.LogRecord) (netip.Addr, time.Time, bool) {
	attrs := lr.Attributes()
	kv, ok := attrs.Get(flowschema.AttrNetworkPeerAddress)
	if !ok || kv.Type() != pcommon.ValueTypeStr {
		return netip.Addr{}, time.Time{}, false
	}
	key, err := flowschema.ParseAddr(kv.Str())
	if err != nil {
		return netip.Addr{}, time.Time{}, false
	}
	at, ok := flowschema.IntTime(attrs, flowschema.AttrFlowStartTime)
	return key, at, ok
}

// writeAttribution writes a lookup result the way the processor does.
func writeAttribution(attrs pcommon.Map, res intervalstore.Result) {
	if res.Owner != nil {
		flowschema.PutOwner(attrs, flowschema.PrefixPeerOwner, *res.Owner)
	}
	attrs.PutStr(flowschema.AttrPeerAttributionStatus, res.Status.String())
	if res.Reason != intervalstore.ReasonNone {
		attrs.PutStr(flowschema.AttrPeerAttributionReason, res.Reason.String())
	}
}
