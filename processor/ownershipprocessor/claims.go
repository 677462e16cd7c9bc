package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"errors"
	"net/netip"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/intervalstore"
)

// applyClaims applies claim records and, when configured, the local side of
// flow records to the store, removes claim records unless kept, and returns
// the keys that got claims. sender is checked against every claim record's
// sender and, when it is another host, every local claim.
func (p *ownershipProcessor) applyClaims(ld plog.Logs, sender senderIdentity, now time.Time, st *batchStats) []netip.Addr {
	var touched []netip.Addr
	bc := batchClaimsPool.Get().(*batchClaims)
	defer bc.reset()
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
					// claim records; kept until then in case the store
					// refuses it.
					bc.records = append(bc.records, intervalstore.Claim[intervalstore.Key128]{Key: intervalstore.AddrKey(c.Address), Owner: c.Owner, Start: c.Start, End: c.End})
					return !p.cfg.KeepClaims
				case flowschema.EventFlow:
					if !p.cfg.ApplyLocalClaims {
						return !p.cfg.KeepFlows
					}
					c, owned, reason := p.localClaim(lr, &bc.owners)
					if !owned {
						st.noLocalOwner++
						return !p.cfg.KeepFlows
					}
					if reason == "" {
						reason = p.checkClaim(c, originFlow, now)
					}
					if reason == "" {
						reason = sender.localClaimRefusal(p.tables, c.Address)
					}
					if reason != "" {
						st.reject(originFlow, reason, 1)
					} else {
						bc.addLocal(c, p.cfg.MergeGap)
					}
					return !p.cfg.KeepFlows
				}
				return false
			})
		}
	}
	// Applied together, the claims' cache misses in the store overlap.
	bc.results = p.store.ApplyBatch(bc.records, bc.results[:0])
	refused := false
	for i, r := range bc.results {
		if p.countApply(r.ApplyResult, r.Err, originClaim, 1, st) {
			touched = append(touched, bc.records[i].Key.Addr())
		} else {
			refused = true
		}
	}
	if refused && p.cfg.KeepClaims {
		// Only claims this processor accepted are passed on: one the store
		// refused goes no further (not to peers, not to a topic). The
		// claim records left are those of bc.records, in order.
		p.dropRefused(ld, bc.results)
	}
	bc.batch = bc.batch[:0]
	for _, lc := range bc.local {
		bc.batch = append(bc.batch, intervalstore.Claim[intervalstore.Key128]{Key: intervalstore.AddrKey(lc.Address), Owner: lc.Owner, Start: lc.Start, End: lc.End})
	}
	bc.results = p.store.ApplyBatch(bc.batch, bc.results[:0])
	for i, lc := range bc.local {
		// Each flow record counts as a claim, joined or not.
		if r := bc.results[i]; p.countApply(r.ApplyResult, r.Err, originFlow, lc.records, st) {
			touched = append(touched, lc.Address)
		}
	}
	// Once per address: a hold recheck costs a lookup per record waiting
	// for the address, under the hold's lock, so a sender repeating one
	// address's claims must not multiply it.
	slices.SortFunc(touched, netip.Addr.Compare)
	return slices.Compact(touched)
}

// dropRefused removes the claim records of ld whose claims the store
// refused: results holds the store's outcome of each claim record left in
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

// batchClaims holds the claims of one batch until they are applied
// together, those of claim records as they are and local claims joined. It
// joins the local claims before they reach the store: a host's flows mostly
// share a few local addresses and overlap in time. Only claims the store
// would join anyway are joined (same address and owner, gap at most
// merge_gap), so the store ends up in the same state.
type batchClaims struct {
	records []intervalstore.Claim[intervalstore.Key128] // the batch's checked claim records
	local   []joinedClaim
	last    map[netip.Addr]int                          // the latest claim of each address in local
	batch   []intervalstore.Claim[intervalstore.Key128] // local, as given to ApplyBatch
	results []intervalstore.ClaimResult
	owners  flowschema.OwnerReader // reads the local owners of flows; kept across batches
}

type joinedClaim struct {
	flowschema.Claim
	records int64 // flow records joined into this claim
	prev    int   // the previous claim of the same address, or -1
}

var batchClaimsPool = sync.Pool{New: func() any {
	return &batchClaims{last: make(map[netip.Addr]int)}
}}

// addLocal adds a local claim, joined into one of the same address if the
// store would join them.
func (bc *batchClaims) addLocal(c flowschema.Claim, mergeGap time.Duration) {
	prev, ok := bc.last[c.Address]
	if !ok {
		prev = -1
	}
	for i := prev; i >= 0; i = bc.local[i].prev {
		j := &bc.local[i]
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
	bc.last[c.Address] = len(bc.local)
	bc.local = append(bc.local, joinedClaim{Claim: c, records: 1, prev: prev})
}

// reset empties bc, dropping its references to owners, and puts it back in
// the pool.
func (bc *batchClaims) reset() {
	clear(bc.records)
	bc.records = bc.records[:0]
	clear(bc.local)
	bc.local = bc.local[:0]
	clear(bc.last)
	clear(bc.batch)
	bc.batch = bc.batch[:0]
	batchClaimsPool.Put(bc)
}

// localClaim reads the claim made by a flow record's local side: the local
// owner held the local address from the flow start (the time attribute, or
// the record Timestamp when absent) to the record Timestamp. owned is false
// when the record names no local owner (the host's own connections, an
// address no ownership source covers): its local side makes no claim.
// Otherwise reason says why the claim is malformed, or is "".
func (p *ownershipProcessor) localClaim(lr plog.LogRecord, owners *flowschema.OwnerReader) (c flowschema.Claim, owned bool, reason string) {
	// One pass over the attributes finds the owner, the address and the
	// start; the first of repeated keys counts, as for Map.Get.
	attrs := lr.Attributes()
	var av, tv pcommon.Value
	var hasAddr, hasStart bool
	owners.Start(flowschema.PrefixLocalOwner)
	for k, v := range attrs.All() {
		owners.See(k, v)
		if !hasAddr && k == flowschema.AttrNetworkLocalAddress {
			av, hasAddr = v, true
		}
		if !hasStart && k == p.cfg.TimeAttribute {
			tv, hasStart = v, true
		}
	}
	owner, ok := owners.Finish(attrs)
	if !ok {
		return flowschema.Claim{}, false, ""
	}
	if !hasAddr || av.Type() != pcommon.ValueTypeStr {
		return flowschema.Claim{}, true, string(flowschema.RejectMissingAddress)
	}
	addr, err := flowschema.ParseAddr(av.Str())
	if err != nil {
		return flowschema.Claim{}, true, string(flowschema.RejectBadAddress)
	}
	if lr.Timestamp() == 0 {
		return flowschema.Claim{}, true, string(flowschema.RejectMissingTime)
	}
	end := lr.Timestamp().AsTime()
	start := end
	// As flowschema.IntTime: a start that is not a positive int is absent.
	if hasStart && tv.Type() == pcommon.ValueTypeInt && tv.Int() > 0 {
		start = time.Unix(0, tv.Int())
	}
	if end.Before(start) {
		return flowschema.Claim{}, true, string(flowschema.RejectEndBeforeStart)
	}
	return flowschema.Claim{Address: addr, Owner: owner, Start: start, End: end}, true, ""
}

// checkClaim says why c is not plausible, or "" when it may be applied.
// It runs before the store interns c's owner.
func (p *ownershipProcessor) checkClaim(c flowschema.Claim, origin int, now time.Time) string {
	switch {
	case p.cfg.OwnerLimits.Check(c.Owner) != nil:
		return reasonOwnerTooLarge
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
