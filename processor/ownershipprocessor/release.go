package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"context"
	"net/netip"
	"sync"
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
	p.deliver(ctx, p.released(ctx, released))
}

// released emits released records in a batch of their own, counted as
// they leave the hold.
func (p *ownershipProcessor) released(ctx context.Context, released []releasedRecord) plog.Logs {
	var st batchStats
	ld := plog.NewLogs()
	p.emit(ctx, released, ld, &st)
	p.tel.report(ctx, &st)
	return ld
}

// recheck looks up again the records this pipeline holds for keys, which
// have just got claims in this pipeline's own ConsumeLogs, and sends on
// those now decided.
func (p *ownershipProcessor) recheck(keys []netip.Addr) {
	if p.hold != nil && p.startOutside() {
		defer p.outside.Done()
		p.send(p.life, p.hold.recheck(keys, p.lookup))
	}
}

// recheckFor is recheck for keys that another pipeline's claims covered:
// the records it decides are handed to this pipeline's sender, so that
// this pipeline's next consumer cannot hold up the other pipeline.
func (p *ownershipProcessor) recheckFor(keys []netip.Addr) {
	if p.hold != nil && p.startOutside() {
		p.post(p.hold.recheck(keys, p.lookup))
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

// releaseExpired hands to this pipeline's sender the records whose
// max_wait is over at now, and has it send again those waiting in the
// outbox; the store's clock callback calls it for every pipeline.
func (p *ownershipProcessor) releaseExpired(now time.Time) {
	if p.hold != nil && p.startOutside() {
		p.post(p.hold.expire(now, p.lookup))
	}
}

// sender sends, in order, the records that the store's clock callback and
// other pipelines' claims release from this pipeline's hold, on a goroutine
// of its own while there are any: a next consumer that is slow or blocked
// then delays this pipeline's releases only, never the clock callback that
// serves every pipeline of the store, nor a pipeline whose claims released
// them.
type sender struct {
	mu      sync.Mutex
	queue   []plog.Logs // emitted, not sent yet; empty ones only resend
	running bool        // a goroutine sends the queue
	// posted and sent count the batches queued and sent so far; progress
	// is closed, and replaced, whenever one is sent.
	posted, sent uint64
	progress     chan struct{}
}

// post emits released, as counted by startOutside, and queues it for the
// sender, with the outbox's resend before it; nothing is queued when
// neither has records. The sender calls p.outside.Done once it is sent.
func (p *ownershipProcessor) post(released []releasedRecord) {
	if len(released) == 0 && p.outbox.waiting.Load() == 0 {
		p.outside.Done()
		return
	}
	ld := plog.NewLogs()
	if len(released) > 0 {
		ld = p.released(p.life, released)
	}
	s := &p.sender
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, ld)
	s.posted++
	if s.progress == nil {
		s.progress = make(chan struct{})
	}
	if !s.running {
		s.running = true
		go p.sendQueued()
	}
}

// sendQueued sends the queued batches one at a time, oldest first, each
// after the outbox's resend, until none is left.
func (p *ownershipProcessor) sendQueued() {
	s := &p.sender
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.running = false
			s.mu.Unlock()
			return
		}
		ld := s.queue[0]
		s.queue[0] = plog.Logs{}
		s.queue = s.queue[1:]
		s.mu.Unlock()
		p.resend(p.life)
		if ld.LogRecordCount() > 0 {
			p.deliver(p.life, ld)
		}
		s.mu.Lock()
		s.sent++
		close(s.progress)
		s.progress = make(chan struct{})
		s.mu.Unlock()
		p.outside.Done()
	}
}

// waitSent returns once the batches queued for the sender before it was
// called are sent, or ctx ends; batches queued meanwhile do not hold it up.
func (p *ownershipProcessor) waitSent(ctx context.Context) {
	s := &p.sender
	s.mu.Lock()
	defer s.mu.Unlock()
	for target := s.posted; s.sent < target; {
		progress := s.progress
		s.mu.Unlock()
		select {
		case <-progress:
		case <-ctx.Done():
			s.mu.Lock()
			return
		}
		s.mu.Lock()
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
