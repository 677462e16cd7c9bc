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
						p.writeResult(attrs, intervalstore.External, nil, reasonOutsideWorkload)
						st.lookup(intervalstore.External)
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
