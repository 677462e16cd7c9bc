package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/intervalstore"
)

// Outcomes of a held record, the values of the outcome telemetry attribute.
const (
	outcomeAttributed = "attributed" // a claim arrived and attributed it
	outcomeDecided    = "decided"    // a claim arrived and settled it otherwise (conflict, uncertain)
	outcomeTimeout    = "timeout"    // max_wait passed
	outcomeOverflow   = "overflow"   // pushed out by a newer record at max_pending
	outcomeShutdown   = "shutdown"   // flushed at shutdown
)

// reasonHoldOverflow is written on a record sent on unattributed because the
// hold was full, before its wait was over.
const reasonHoldOverflow = "hold_overflow"

// waitsForClaim reports whether a later claim can still decide r: the key is
// unknown, the time is after, before or between its ranges, or its owner is
// known but part of the clock_skew neighbourhood is not covered yet (the
// claim that would make it uncertain may be on its way). Expired times,
// conflicts and near-owner-change uncertainty stay as they are whatever
// arrives later, so records with those results are not held.
func waitsForClaim(r intervalstore.Result) bool {
	if r.Status != intervalstore.Unattributed {
		return false
	}
	switch r.Reason {
	case intervalstore.ReasonNoClaim, intervalstore.ReasonAfterLastClaim,
		intervalstore.ReasonBeforeFirstClaim, intervalstore.ReasonGap,
		intervalstore.ReasonNearUnclaimedEdge:
		return true
	}
	return false
}

// resourceGroup and scopeGroup keep the Resource and Scope that held records
// came with, so that they are re-emitted under them.
type resourceGroup struct {
	resource  pcommon.Resource
	schemaURL string
}

type scopeGroup struct {
	resource  *resourceGroup
	scope     pcommon.InstrumentationScope
	schemaURL string
}

func newResourceGroup(rl plog.ResourceLogs) *resourceGroup {
	g := &resourceGroup{resource: pcommon.NewResource(), schemaURL: rl.SchemaUrl()}
	rl.Resource().CopyTo(g.resource)
	return g
}

func newScopeGroup(rg *resourceGroup, sl plog.ScopeLogs) *scopeGroup {
	g := &scopeGroup{resource: rg, scope: pcommon.NewInstrumentationScope(), schemaURL: sl.SchemaUrl()}
	sl.Scope().CopyTo(g.scope)
	return g
}

// heldRecord is a flow record waiting for a claim covering key at time at.
type heldRecord struct {
	record   plog.LogRecord // owned by the hold, detached from its batch
	group    *scopeGroup
	key      netip.Addr
	at       time.Time
	fallback bool // at came from the record Timestamp
	since    time.Time
	// translation is looked up when the record is released.
	translation translation
	// backend, when valid, is the translated peer's address, a workload
	// address the record also waits for: it is released once neither
	// the peer nor the backend waits for a claim.
	backend   netip.Addr
	held      bool // in the hold: set by add, cleared when it leaves
	prev, nxt *heldRecord
	// batch is the batch that held the record, until settle once that
	// batch's consume has returned: meanwhile the record is tentative, and
	// whatever releases it hands it to the batch. Guarded by the hold's mu.
	batch *batchRecords
}

// releasedRecord is a record leaving the hold with its final lookup.
type releasedRecord struct {
	*heldRecord
	result  intervalstore.Result
	outcome string
}

// batchRecords are the records one batch put in the hold, tentative until
// settle: the batch's receiver retries the whole batch if the next consumer
// refuses it, so none of them may go on before the batch's outcome is known.
// Every field is guarded by the hold's mu.
type batchRecords struct {
	held   []*heldRecord    // every record the batch put in the hold
	handed []releasedRecord // those of held released while tentative
}

// hold keeps waiting records in arrival order (which is deadline order, as
// every record waits max_wait) and indexed by key.
type hold struct {
	maxWait    time.Duration
	maxPending int

	mu         sync.Mutex
	head, tail *heldRecord
	byKey      map[netip.Addr][]*heldRecord
	count      int
	closed     bool // drained at shutdown; holds nothing more
	// tentative are the batches with records in the hold, or handed over,
	// that are not settled yet: drain flushes their handed records too.
	tentative map[*batchRecords]struct{}

	// active counts held records plus adds in progress. An add counts itself
	// before its lookup, so a claim applied before a recheck that reads zero
	// here is visible to every add that has not looked up yet.
	active atomic.Int64
}

func newHold(maxWait time.Duration, maxPending int) *hold {
	return &hold{maxWait: maxWait, maxPending: maxPending, byKey: make(map[netip.Addr][]*heldRecord), tentative: make(map[*batchRecords]struct{})}
}

// waits looks r up and reports whether a claim can still decide it, its
// peer's or its backend's; res is the peer's result.
func (r *heldRecord) waits(lookup func(netip.Addr, time.Time) intervalstore.Result) (res intervalstore.Result, waits bool) {
	res = lookup(r.key, r.at)
	if waitsForClaim(res) {
		return res, true
	}
	return res, r.backend.IsValid() && waitsForClaim(lookup(r.backend, r.at))
}

// add moves lr into r and holds it for batch b, tentatively, if lookup, run
// under the hold's lock so that a claim applied concurrently is either seen
// here or rechecks r, still waits for a claim. Otherwise lr stays where it is
// and add returns false with the lookup's result. overflow lists the records
// pushed out to stay within max_pending, but for tentative ones, which go to
// their batch.
func (h *hold) add(b *batchRecords, r *heldRecord, lr plog.LogRecord, lookup func(netip.Addr, time.Time) intervalstore.Result) (held bool, res intervalstore.Result, overflow []releasedRecord) {
	h.active.Add(1)
	h.mu.Lock()
	defer h.mu.Unlock()
	res, waits := r.waits(lookup)
	if h.closed || !waits {
		h.active.Add(-1)
		return false, res, nil
	}
	r.record = plog.NewLogRecord()
	lr.MoveTo(r.record)
	for h.count >= h.maxPending {
		oldest := h.head
		h.remove(oldest)
		overflow = h.release(overflow, releasedRecord{
			heldRecord: oldest,
			result:     intervalstore.Result{Status: intervalstore.Unattributed},
			outcome:    outcomeOverflow,
		})
	}
	r.prev = h.tail
	if h.tail != nil {
		h.tail.nxt = r
	} else {
		h.head = r
	}
	h.tail = r
	h.byKey[r.key] = append(h.byKey[r.key], r)
	if r.backend.IsValid() {
		h.byKey[r.backend] = append(h.byKey[r.backend], r)
	}
	r.held = true
	r.batch = b
	b.held = append(b.held, r)
	h.tentative[b] = struct{}{}
	h.count++
	return true, res, overflow
}

// release appends r, which has just left the hold, to out, unless it is
// tentative: then it goes to its batch, for settle. The caller holds mu.
func (h *hold) release(out []releasedRecord, r releasedRecord) []releasedRecord {
	if b := r.batch; b != nil {
		b.handed = append(b.handed, r)
		return out
	}
	return append(out, r)
}

// remove unlinks r from the arrival list and its keys' lists; the caller
// holds mu.
func (h *hold) remove(r *heldRecord) {
	h.unlink(r)
	h.unindex(r, r.key)
	if r.backend.IsValid() {
		h.unindex(r, r.backend)
	}
}

// unindex removes r from key's list; the caller holds mu.
func (h *hold) unindex(r *heldRecord, key netip.Addr) {
	list := h.byKey[key]
	switch i := slices.Index(list, r); {
	case i == 0: // the usual case: records leave their key in arrival order
		list = list[1:]
	case i > 0:
		list = slices.Delete(list, i, i+1)
	}
	if len(list) == 0 {
		delete(h.byKey, key)
	} else {
		h.byKey[key] = list
	}
}

// unlink removes r from the arrival list only; the caller holds mu and
// fixes byKey.
func (h *hold) unlink(r *heldRecord) {
	if r.prev != nil {
		r.prev.nxt = r.nxt
	} else {
		h.head = r.nxt
	}
	if r.nxt != nil {
		r.nxt.prev = r.prev
	} else {
		h.tail = r.prev
	}
	r.prev, r.nxt = nil, nil
	r.held = false
	h.count--
	h.active.Add(-1)
}

// recheck looks up again the records held for keys and releases those that
// no longer wait for a claim.
func (h *hold) recheck(keys []netip.Addr, lookup func(netip.Addr, time.Time) intervalstore.Result) []releasedRecord {
	if h.active.Load() == 0 {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []releasedRecord
	for _, k := range keys {
		list := h.byKey[k]
		if len(list) == 0 {
			continue
		}
		waiting := list[:0]
		for _, r := range list {
			res, waits := r.waits(lookup)
			if waits {
				waiting = append(waiting, r)
				continue
			}
			h.unlink(r)
			// Its other key's list, which this loop does not rewrite.
			if other := r.key; other != k {
				h.unindex(r, other)
			} else if r.backend.IsValid() {
				h.unindex(r, r.backend)
			}
			outcome := outcomeDecided
			if res.Status == intervalstore.Attributed {
				outcome = outcomeAttributed
			}
			out = h.release(out, releasedRecord{heldRecord: r, result: res, outcome: outcome})
		}
		if len(waiting) == 0 {
			delete(h.byKey, k)
		} else {
			clear(list[len(waiting):]) // drop references to released records
			h.byKey[k] = waiting
		}
	}
	return out
}

// expire releases the records held since before now-max_wait, with their
// final lookup.
func (h *hold) expire(now time.Time, lookup func(netip.Addr, time.Time) intervalstore.Result) []releasedRecord {
	if h.active.Load() == 0 {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []releasedRecord
	for h.head != nil && !now.Before(h.head.since.Add(h.maxWait)) {
		r := h.head
		h.remove(r)
		out = h.release(out, releasedRecord{heldRecord: r, result: lookup(r.key, r.at), outcome: outcomeTimeout})
	}
	return out
}

// settle ends the tentative state of batch b's records once its consume
// has returned. When the batch went on, the records released meanwhile are
// returned, to be sent. When it was refused, its receiver retries it whole:
// its records leave the hold unsent, those still held and those released
// meanwhile alike, and dropped says how many left.
func (h *hold) settle(b *batchRecords, refused bool) (released []releasedRecord, dropped int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.tentative, b)
	for _, r := range b.held {
		r.batch = nil
	}
	released, b.handed = b.handed, nil
	if refused {
		dropped = h.withdraw(b.held) + len(released)
		released = nil
	}
	return released, dropped
}

// withdraw removes those of records that are still held, unreleased, and
// returns how many it removed; the caller holds mu. It unlinks them, then
// filters the list of each address they touch once: linear in the records
// and those lists.
func (h *hold) withdraw(records []*heldRecord) int {
	touched := make(map[netip.Addr]struct{})
	n := 0
	for _, r := range records {
		if r.held {
			h.unlink(r)
			touched[r.key] = struct{}{}
			if r.backend.IsValid() {
				touched[r.backend] = struct{}{}
			}
			n++
		}
	}
	for k := range touched {
		if list := slices.DeleteFunc(h.byKey[k], func(r *heldRecord) bool { return !r.held }); len(list) == 0 {
			delete(h.byKey, k)
		} else {
			h.byKey[k] = list
		}
	}
	return n
}

// drain releases every held record, with its final lookup, and closes the
// hold. Tentative records go too, and so do those already handed to their
// batch: a batch still downstream may settle only after the collector has
// shut down what it would send them to. If that batch is then refused and
// retried, they go again; at shutdown that is the lesser harm.
func (h *hold) drain(lookup func(netip.Addr, time.Time) intervalstore.Result) []releasedRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	var out []releasedRecord
	for b := range h.tentative {
		out = append(out, b.handed...)
		b.handed = nil
	}
	for h.head != nil {
		r := h.head
		h.remove(r)
		out = append(out, releasedRecord{heldRecord: r, result: lookup(r.key, r.at), outcome: outcomeShutdown})
	}
	return out
}
