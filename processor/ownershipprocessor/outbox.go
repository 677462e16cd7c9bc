package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"context"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.uber.org/zap"
)

// outbox keeps the batches of released records that the next consumer
// refused with a retryable error, their attribution final, to send them
// again whole, oldest first. At most max records wait in it; beyond that
// the oldest are dropped. One pipeline's instance has one outbox.
type outbox struct {
	max int

	// sending serialises resends: one batch at a time leaves the outbox.
	sending sync.Mutex

	mu      sync.Mutex
	batches []plog.Logs // oldest first
	count   int         // records in batches
	closed  bool        // emptied at shutdown; keeps nothing more
	// refusing is set from the first refusal until the outbox is empty
	// again, dropping from the first record dropped at the bound: each is
	// logged once per such burst.
	refusing, dropping bool

	waiting atomic.Int64 // count, read without mu
}

// deliver hands ld, released records with their final attribution, to the
// next consumer. A retryable refusal keeps it in the outbox, to be resent;
// a permanent one drops it, counted in release_failures and logged.
func (p *ownershipProcessor) deliver(ctx context.Context, ld plog.Logs) {
	err := p.forward(ctx, ld)
	if err == nil {
		return
	}
	n := int64(ld.LogRecordCount())
	if consumererror.IsPermanent(err) {
		p.lose(ctx, n, "Next consumer permanently refused released flow records; dropped", err)
		return
	}
	o := p.outbox
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		p.lose(ctx, n, "Next consumer refused released flow records at shutdown; dropped", err)
		return
	}
	first := !o.refusing
	o.refusing = true
	o.batches = append(o.batches, ld)
	o.count += int(n)
	dropped, firstDrop := o.trim()
	o.waiting.Store(int64(o.count))
	o.mu.Unlock()
	p.tel.ProcessorOwnershipRecordsAwaitingResend.Add(ctx, n)
	if first {
		p.logger.Warn("Next consumer refused released flow records; kept to be sent again", zap.Int64("records", n), zap.Error(err))
	}
	p.dropped(ctx, dropped, firstDrop)
}

// dropped counts n records dropped from the outbox at its bound, logged
// once per burst of refusals.
func (p *ownershipProcessor) dropped(ctx context.Context, n int64, first bool) {
	if n == 0 {
		return
	}
	p.tel.ProcessorOwnershipRecordsAwaitingResend.Add(ctx, -n)
	p.tel.ProcessorOwnershipReleaseFailures.Add(ctx, n)
	if first {
		p.logger.Warn("Released flow records waiting to be sent again beyond max_pending; oldest dropped", zap.Int64("records", n))
	}
}

// lose counts n released records that will not reach the next consumer.
func (p *ownershipProcessor) lose(ctx context.Context, n int64, msg string, err error) {
	p.tel.ProcessorOwnershipReleaseFailures.Add(ctx, n)
	p.logger.Warn(msg, zap.Int64("records", n), zap.Error(err))
}

// trim drops the oldest waiting records beyond max, and says how many and
// whether they are the first of the current burst; the caller holds mu.
func (o *outbox) trim() (dropped int64, first bool) {
	for o.count > o.max {
		excess := o.count - o.max
		n := o.batches[0].LogRecordCount()
		if n <= excess {
			o.batches[0] = plog.Logs{}
			o.batches = o.batches[1:]
		} else {
			n = excess
			dropFirst(o.batches[0], n)
		}
		o.count -= n
		dropped += int64(n)
	}
	if dropped > 0 && !o.dropping {
		o.dropping, first = true, true
	}
	return dropped, first
}

// dropFirst removes the first n records of ld, and the scopes and
// resources left empty.
func dropFirst(ld plog.Logs, n int) {
	for _, rl := range ld.ResourceLogs().All() {
		for _, sl := range rl.ScopeLogs().All() {
			sl.LogRecords().RemoveIf(func(plog.LogRecord) bool {
				if n == 0 {
					return false
				}
				n--
				return true
			})
		}
	}
	removeEmpty(ld)
}

// take removes the oldest waiting batch.
func (o *outbox) take() (plog.Logs, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.batches) == 0 {
		return plog.Logs{}, false
	}
	ld := o.batches[0]
	o.batches[0] = plog.Logs{}
	o.batches = o.batches[1:]
	o.count -= ld.LogRecordCount()
	o.waiting.Store(int64(o.count))
	return ld, true
}

// putBack returns ld, refused again, to the front of the outbox, and
// drops what is then beyond max.
func (o *outbox) putBack(ld plog.Logs) (dropped int64, first bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.batches = append([]plog.Logs{ld}, o.batches...)
	o.count += ld.LogRecordCount()
	dropped, first = o.trim()
	o.waiting.Store(int64(o.count))
	return dropped, first
}

// emptied ends the current burst of refusals once nothing waits, and says
// whether it ended.
func (o *outbox) emptied() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.batches) > 0 || !o.refusing {
		return false
	}
	o.refusing, o.dropping = false, false
	return true
}

// resend hands the waiting batches to the next consumer, oldest first, each
// whole, until one is refused with a retryable error: that one goes back to
// the front. A batch accepted leaves the outbox for good; a permanently
// refused one is dropped and counted. It returns at once when nothing waits
// or a resend is under way.
func (p *ownershipProcessor) resend(ctx context.Context) {
	o := p.outbox
	if o == nil || o.waiting.Load() == 0 || !o.sending.TryLock() {
		return
	}
	defer o.sending.Unlock()
	for {
		ld, ok := o.take()
		if !ok {
			if o.emptied() {
				p.logger.Info("Next consumer accepted the released flow records it had refused")
			}
			return
		}
		n := int64(ld.LogRecordCount())
		err := p.forward(ctx, ld)
		switch {
		case err == nil:
			p.tel.ProcessorOwnershipRecordsAwaitingResend.Add(ctx, -n)
		case consumererror.IsPermanent(err):
			p.tel.ProcessorOwnershipRecordsAwaitingResend.Add(ctx, -n)
			p.lose(ctx, n, "Next consumer permanently refused released flow records; dropped", err)
		default:
			dropped, first := o.putBack(ld)
			p.dropped(ctx, dropped, first)
			return
		}
	}
}

// closeOutbox makes one last attempt at every waiting batch, oldest first,
// once a resend under way is over, and closes the outbox: what the next
// consumer refuses then, and every refusal after, is counted in
// release_failures and logged.
func (p *ownershipProcessor) closeOutbox(ctx context.Context) {
	o := p.outbox
	o.sending.Lock()
	defer o.sending.Unlock()
	o.mu.Lock()
	batches := o.batches
	o.batches, o.count, o.closed = nil, 0, true
	o.waiting.Store(0)
	o.mu.Unlock()
	var lost int64
	var lastErr error
	for _, ld := range batches {
		n := int64(ld.LogRecordCount())
		p.tel.ProcessorOwnershipRecordsAwaitingResend.Add(ctx, -n)
		if err := p.forward(ctx, ld); err != nil {
			lost += n
			lastErr = err
		}
	}
	if lost > 0 {
		p.lose(ctx, lost, "Next consumer refused released flow records at shutdown; dropped", lastErr)
	}
}
