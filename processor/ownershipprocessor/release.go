package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"context"
	"net/netip"
	"time"

	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/intervalstore"
)

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
		p.writeTranslated(attrs, r.translation, r.at, r.fallback)
		st.lookup(r.result.Status)
		st.heldChange--
		p.tel.ProcessorOwnershipRecordsReleased.Add(ctx, 1, p.tel.outcomes[r.outcome])
		p.tel.ProcessorOwnershipHoldDuration.Record(ctx, now.Sub(r.since).Seconds())
		g.add(r.heldRecord)
	}
}

// send emits released records in a batch of their own and delivers it: a
// retryable refusal keeps it in the outbox, to be sent again.
func (p *ownershipProcessor) send(ctx context.Context, released []releasedRecord) {
	if len(released) == 0 {
		return
	}
	var st batchStats
	ld := plog.NewLogs()
	p.emit(ctx, released, ld, &st)
	p.tel.report(ctx, &st)
	p.deliver(ctx, ld)
}

// recheck looks up again the records this pipeline holds for keys, which
// have just got claims (from any pipeline), and sends on those now decided.
func (p *ownershipProcessor) recheck(keys []netip.Addr) {
	if p.hold != nil && p.startOutside() {
		defer p.outside.Done()
		p.send(p.life, p.hold.recheck(keys, p.lookup))
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

// releaseExpired sends again the records waiting in the outbox, then sends
// on those whose max_wait is over at now; the store's clock callback calls
// it.
func (p *ownershipProcessor) releaseExpired(now time.Time) {
	if p.hold != nil && p.startOutside() {
		defer p.outside.Done()
		p.resend(p.life)
		p.send(p.life, p.hold.expire(now, p.lookup))
	}
}

// shutdown waits for the releases under way, makes a last attempt at the
// records waiting in the outbox, flushes every held record downstream, then
// releases the shared store. Refusals of either are counted in
// release_failures. If ctx ends while releases are still downstream, they
// are cancelled: their records are refused, then counted. It runs once
// however often it is called.
func (p *ownershipProcessor) shutdown(ctx context.Context) {
	p.shutdownOnce.Do(func() {
		p.shared.unsubscribe(p)
		p.outsideMu.Lock()
		p.stopping = true
		p.outsideMu.Unlock()
		released := make(chan struct{})
		go func() {
			p.outside.Wait()
			close(released)
		}()
		select {
		case <-released:
		case <-ctx.Done():
			p.endLife()
			<-released
		}
		defer p.endLife()
		if p.hold != nil {
			p.closeOutbox(ctx)
			p.send(ctx, p.hold.drain(p.lookup))
		}
		p.tel.Shutdown()
		p.stores.release(p.id)
	})
}

// regrouper appends released records to a plog.Logs under copies of their
// original Resource and Scope, one ResourceLogs/ScopeLogs per group.
type regrouper struct {
	ld        plog.Logs
	resources map[*resourceGroup]plog.ResourceLogs
	scopes    map[*scopeGroup]plog.LogRecordSlice
}

func newRegrouper(ld plog.Logs) *regrouper {
	return &regrouper{
		ld:        ld,
		resources: make(map[*resourceGroup]plog.ResourceLogs),
		scopes:    make(map[*scopeGroup]plog.LogRecordSlice),
	}
}

func (g *regrouper) add(r *heldRecord) {
	records, ok := g.scopes[r.group]
	if !ok {
		rl, ok := g.resources[r.group.resource]
		if !ok {
			rl = g.ld.ResourceLogs().AppendEmpty()
			r.group.resource.resource.CopyTo(rl.Resource())
			rl.SetSchemaUrl(r.group.resource.schemaURL)
			g.resources[r.group.resource] = rl
		}
		sl := rl.ScopeLogs().AppendEmpty()
		r.group.scope.CopyTo(sl.Scope())
		sl.SetSchemaUrl(r.group.schemaURL)
		records = sl.LogRecords()
		g.scopes[r.group] = records
	}
	r.record.MoveTo(records.AppendEmpty())
}
