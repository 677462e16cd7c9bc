package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"context"
	"time"

	"go.opentelemetry.io/collector/pdata/plog"
)

// consumeBatch is what process did to the hold in one ConsumeLogs, for
// ConsumeLogs to finish once the batch has gone downstream.
type consumeBatch struct {
	released []releasedRecord // timeout and overflow releases of settled records
	own      batchRecords     // the batch's own records put in the hold
}

// ConsumeLogs first waits until the records that the clock callback and
// other pipelines' claims released from this pipeline's hold are sent (see
// sender), so that they go on ahead of ld and a blocked next consumer
// holds its own pipeline back, then sends again the released records that
// the next consumer refused earlier (see resend), then processes ld, sends what is
// left of it to the next consumer and handles what the hold did meanwhile.
// Records released by it (max_wait over, pushed out of a full hold) are
// sent after the batch in one of their own, with no request context, as
// every other release: a
// refusal then keeps them in the outbox, or counts them in release_failures
// if it is permanent, and never fails the receiver's batch. The records
// the batch put in the hold stay tentative until the next consumer has
// answered: whatever releases one meanwhile (a claim from any pipeline,
// max_wait, another batch's overflow) hands it to the batch; only shutdown
// sends it (see hold.drain). When the batch went on, those follow it with
// the others. When it failed, its receiver may retry it whole, so the
// batch's records leave the hold undelivered, held or handed over: kept,
// they would go downstream twice.
func (p *ownershipProcessor) ConsumeLogs(ctx context.Context, ld plog.Logs) error {
	p.waitSent(ctx)
	p.resend(p.life)
	var b consumeBatch
	returned := false
	defer func() {
		if !returned {
			// consume panicked (a server may recover from it and fail
			// the request): the batch is settled as refused, lest its
			// records stay tentative for good, and the records it
			// released go on.
			p.settle(ctx, &b, true)
			p.send(p.life, b.released)
		}
	}()
	err := p.consume(ctx, ld, &b)
	returned = true
	p.settle(ctx, &b, err != nil)
	// Released records go on without this request's context: most came
	// with other requests, whose client metadata must not be passed off as
	// this one's, and the request may have ended.
	p.send(p.life, b.released)
	return err
}

// consume processes ld, telling b about the records it held and released,
// and sends what is left of it to the next consumer; a batch left empty is
// not sent.
func (p *ownershipProcessor) consume(ctx context.Context, ld plog.Logs, b *consumeBatch) error {
	started := time.Now()
	p.tel.ProcessorIncomingItems.Add(ctx, int64(ld.LogRecordCount()), p.tel.items)
	p.process(ctx, ld, b)
	p.tel.ProcessorInternalDuration.Record(ctx, time.Since(started).Seconds(), p.tel.items)
	if ld.LogRecordCount() == 0 {
		return nil
	}
	return p.forward(ctx, ld)
}

// forward sends ld to the next consumer, counting its records as outgoing
// whether the next consumer accepts them or not.
func (p *ownershipProcessor) forward(ctx context.Context, ld plog.Logs) error {
	p.tel.ProcessorOutgoingItems.Add(ctx, int64(ld.LogRecordCount()), p.tel.items)
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
	p.shared.claimsApplied(p, p.applyClaims(ld, identify(ctx, p.cfg.SenderIdentity), now, &st))
	p.attributeFlows(ld, b, &st, now)
	p.tel.report(ctx, &st)
	removeEmpty(ld)
}

// removeEmpty drops the scopes and resources left without records.
func removeEmpty(ld plog.Logs) {
	ld.ResourceLogs().RemoveIf(func(rl plog.ResourceLogs) bool {
		rl.ScopeLogs().RemoveIf(func(sl plog.ScopeLogs) bool { return sl.LogRecords().Len() == 0 })
		return rl.ScopeLogs().Len() == 0
	})
}
