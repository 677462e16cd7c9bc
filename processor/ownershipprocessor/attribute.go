package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/intervalstore"
	"github.com/flowattr/flowattr/internal/owners"
)

// attributeFlows writes the peer attribution on every flow record, holding
// those that wait for a claim. It adds to b the records it held and those
// they pushed out of a full hold. The keys and times of the whole batch are
// read first, so that the store lookups are made a chunk at a time,
// together, and their cache misses overlap.
func (p *ownershipProcessor) attributeFlows(ld plog.Logs, b *consumeBatch, st *batchStats, now time.Time) {
	fb := flowBatchPool.Get().(*flowBatch)
	defer fb.reset()
	fb.latest = now.Add(p.cfg.MaxFuture)
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
					p.writeTranslated(attrs, f.translation, f.at, f.fallback)
					st.lookup(intervalstore.Unattributed)
					return false
				case f.result < 0:
					if o, ok := p.tables.static.Lookup(f.key); ok {
						p.writeResult(attrs, intervalstore.Attributed, o, reasonStatic)
						st.lookup(intervalstore.Attributed)
					} else {
						p.writeResult(attrs, intervalstore.External, nil, reasonOutsideWorkload)
						st.lookup(intervalstore.External)
					}
					p.writeTranslated(attrs, f.translation, f.at, f.fallback)
					return false
				}
				res := fb.result(p.store, f.result)
				if p.hold != nil && (waitsForClaim(res) || p.backendWaits(f)) {
					if sg == nil {
						if rg == nil {
							rg = newResourceGroup(rl)
						}
						sg = newScopeGroup(rg, sl)
					}
					r := &heldRecord{group: sg, key: f.key, at: f.at, fallback: f.fallback, since: p.clock.Now(), translation: f.translation, backend: p.backend(f)}
					var held bool
					var pushed []releasedRecord
					if held, res, pushed = p.hold.add(&b.own, r, lr, p.lookup); held {
						st.heldChange++
						b.released = append(b.released, pushed...)
						return true
					}
				}
				p.writeLookup(attrs, res, f.fallback)
				p.writeTranslated(attrs, f.translation, f.at, f.fallback)
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
	// latest is the latest start a flow may have: now + max_future, as for
	// a claim's end. A later one no claim can cover before max_wait ends;
	// held, it would only push waiting records out of the hold.
	latest time.Time
}

type flowPlan struct {
	flow        bool // a flow record; the other fields are set only then
	key         netip.Addr
	at          time.Time
	fallback    bool
	reason      string // why the record cannot be looked up, or ""
	result      int    // index in results, -1 when key is outside workload_cidrs
	translation translation
}

// translation is what a flow record says of its translated peer (the
// backend behind a service address), for writeTranslated.
type translation struct {
	// present: the record has the translated key attribute; key is the
	// address when it parses.
	present bool
	key     netip.Addr
	// reason is set when the record has no lookup time (as for the peer)
	// or the key does not parse. The time is the peer's.
	reason string
	// stale: the record carries attributes of a translated peer's
	// attribution, to be replaced or removed.
	stale bool
}

var flowBatchPool = sync.Pool{New: func() any { return new(flowBatch) }}

func (fb *flowBatch) plan(p *ownershipProcessor, lr plog.LogRecord) {
	f := flowPlan{result: -1}
	if lr.EventName() == flowschema.EventFlow {
		f.flow = true
		f.key, f.at, f.fallback, f.reason, f.translation = p.flowQuery(lr)
		if f.reason == "" && f.at.After(fb.latest) {
			f.reason, f.translation.reason = reasonBadTime, reasonBadTime
		}
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
		done := len(fb.results)
		n := min(done+lookupChunk, len(fb.queries))
		fb.results = store.LookupBatch(fb.queries[done:n], fb.results)
		touchOwners(fb.results[done:])
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

// flowQuery reads the key and lookup time of a flow record, and its
// translated peer, in one pass over its attributes. reason is set when the
// record cannot be looked up.
func (p *ownershipProcessor) flowQuery(lr plog.LogRecord) (key netip.Addr, at time.Time, fallback bool, reason string, tr translation) {
	var kv, tv, trv pcommon.Value
	var hasKey, hasTime bool
	translated := p.translatedOwners != nil
	// The first of repeated keys counts, as for Map.Get.
	for k, v := range lr.Attributes().All() {
		switch {
		case !hasKey && k == p.cfg.KeyAttribute:
			kv, hasKey = v, true
		case !hasTime && k == p.cfg.TimeAttribute:
			tv, hasTime = v, true
		case !translated:
			if hasKey && hasTime {
				return p.finishQuery(lr, kv, tv, hasKey, hasTime, trv, tr)
			}
		case !tr.present && k == p.cfg.TranslatedKeyAttribute:
			trv, tr.present = v, true
		case !tr.stale && p.isTranslatedResult(k):
			tr.stale = true
		}
	}
	return p.finishQuery(lr, kv, tv, hasKey, hasTime, trv, tr)
}

// finishQuery parses what flowQuery found.
func (p *ownershipProcessor) finishQuery(lr plog.LogRecord, kv, tv pcommon.Value, hasKey, hasTime bool, trv pcommon.Value, tr translation) (key netip.Addr, at time.Time, fallback bool, reason string, _ translation) {
	switch {
	case !hasTime && lr.Timestamp() == 0:
		reason = reasonMissingTime
	case !hasTime:
		at, fallback = lr.Timestamp().AsTime(), true
	case tv.Type() != pcommon.ValueTypeInt || tv.Int() <= 0:
		reason = reasonBadTime
	default:
		at = time.Unix(0, tv.Int())
	}
	tr.reason = reason
	if tr.present && tr.reason == "" {
		var err error
		if trv.Type() != pcommon.ValueTypeStr {
			tr.reason = reasonBadKey
		} else if tr.key, err = flowschema.ParseAddr(trv.Str()); err != nil {
			tr.reason = reasonBadKey
		}
	}
	// The peer's key is checked before its time, as it always was.
	switch {
	case !hasKey:
		return key, at, false, reasonMissingKey, tr
	case kv.Type() != pcommon.ValueTypeStr:
		return key, at, false, reasonBadKey, tr
	}
	key, err := flowschema.ParseAddr(kv.Str())
	if err != nil {
		return key, at, false, reasonBadKey, tr
	}
	return key, at, fallback, reason, tr
}

// backend returns the address of f's translated peer when a claim for it
// may be waited for: a workload address other than the peer; else the
// zero Addr.
func (p *ownershipProcessor) backend(f *flowPlan) netip.Addr {
	if tr := f.translation; tr.present && tr.reason == "" && tr.key != f.key && p.tables.isWorkload(tr.key) {
		return tr.key
	}
	return netip.Addr{}
}

// backendWaits reports whether a later claim can still decide f's
// translated peer.
func (p *ownershipProcessor) backendWaits(f *flowPlan) bool {
	b := p.backend(f)
	return b.IsValid() && waitsForClaim(p.lookup(b, f.at))
}

// isTranslatedResult reports whether k is written by writeTranslated.
func (p *ownershipProcessor) isTranslatedResult(k string) bool {
	return k == flowschema.AttrPeerTranslatedAttributionStatus || k == flowschema.AttrPeerTranslatedAttributionReason ||
		flowschema.HasKeyPrefix(k, p.translatedOwners.Prefix())
}

// writeTranslated writes the owner of the record's translated peer (the
// backend behind a service address) at the flow's start, the time the peer
// is looked up at, under translated_owner_prefix, when the record goes on.
// A record without one keeps no translated attribution it came with.
func (p *ownershipProcessor) writeTranslated(attrs pcommon.Map, tr translation, at time.Time, fallback bool) {
	switch {
	case p.translatedOwners == nil || (!tr.present && !tr.stale):
		return
	case !tr.present:
		attrs.RemoveIf(func(k string, _ pcommon.Value) bool { return p.isTranslatedResult(k) })
		return
	case tr.reason != "":
		p.writeResultTo(attrs, p.translatedOwners, flowschema.AttrPeerTranslatedAttributionStatus, flowschema.AttrPeerTranslatedAttributionReason,
			intervalstore.Unattributed, nil, tr.reason)
		return
	}
	var res intervalstore.Result
	switch o, ok := p.tables.static.Lookup(tr.key); {
	case p.tables.isWorkload(tr.key):
		res = p.lookup(tr.key, at)
	case ok:
		p.writeResultTo(attrs, p.translatedOwners, flowschema.AttrPeerTranslatedAttributionStatus, flowschema.AttrPeerTranslatedAttributionReason,
			intervalstore.Attributed, o, reasonStatic)
		return
	default:
		p.writeResultTo(attrs, p.translatedOwners, flowschema.AttrPeerTranslatedAttributionStatus, flowschema.AttrPeerTranslatedAttributionReason,
			intervalstore.External, nil, reasonOutsideWorkload)
		return
	}
	reason := res.Reason.String()
	if res.Status == intervalstore.Attributed && fallback {
		reason = reasonTimestampUsed
	}
	p.writeResultTo(attrs, p.translatedOwners, flowschema.AttrPeerTranslatedAttributionStatus, flowschema.AttrPeerTranslatedAttributionReason,
		res.Status, res.Owner, reason)
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

// writeResult writes the peer's attribution; see writeResultTo.
func (p *ownershipProcessor) writeResult(attrs pcommon.Map, status intervalstore.Status, owner *owners.Owner, reason string) {
	p.writeResultTo(attrs, p.owners, flowschema.AttrPeerAttributionStatus, flowschema.AttrPeerAttributionReason, status, owner, reason)
}

// writeResultTo replaces whatever the record carried under w's prefix and
// the status and reason keys, so that a stale or forged owner never
// survives an unattributed result. One pass over the attributes rewrites
// the keys the result writes in place and removes the other owner keys;
// only keys the record lacked are added.
func (p *ownershipProcessor) writeResultTo(attrs pcommon.Map, w *flowschema.OwnerWriter, statusKey, reasonKey string, status intervalstore.Status, owner *owners.Owner, reason string) {
	prefix := w.Prefix()
	var o owners.Owner
	if owner != nil {
		o = *owner
	}
	if len(o.Attributes) > maxOwnerAttrsInPlace {
		attrs.RemoveIf(func(k string, _ pcommon.Value) bool { return strings.HasPrefix(k, prefix) })
		attrs.Remove(reasonKey)
		w.Put(attrs, o)
		putStatus(attrs, statusKey, reasonKey, status, reason, 0)
		return
	}
	var wrote uint64
	attrs.RemoveIf(func(k string, v pcommon.Value) bool {
		var bit uint64
		switch {
		case k == statusKey:
			bit = wroteStatus
			if wrote&bit == 0 {
				v.SetStr(status.String())
			}
		case k == reasonKey:
			if reason == "" {
				return true
			}
			bit = wroteReason
			if wrote&bit == 0 {
				v.SetStr(reason)
			}
		case !flowschema.HasKeyPrefix(k, prefix):
			return false
		case owner == nil:
			return true
		case k == w.IDKey():
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
			attrs.PutStr(w.IDKey(), o.ID)
		}
		for i, a := range o.Attributes {
			if wrote&(wroteFirstOwnerAttr<<i) == 0 {
				attrs.PutStr(w.Key(a.Name), a.Value)
			}
		}
	}
	putStatus(attrs, statusKey, reasonKey, status, reason, wrote)
}

// putStatus adds the status and reason attributes unless wrote says they
// are written already.
func putStatus(attrs pcommon.Map, statusKey, reasonKey string, status intervalstore.Status, reason string, wrote uint64) {
	if wrote&wroteStatus == 0 {
		attrs.PutStr(statusKey, status.String())
	}
	if reason != "" && wrote&wroteReason == 0 {
		attrs.PutStr(reasonKey, reason)
	}
}
