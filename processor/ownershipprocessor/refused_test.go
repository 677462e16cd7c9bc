package ownershipprocessor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadata"
)

var errQueueFull = errors.New("queue full")

// refusingConsumer passes batches on to its sink, but refuses the next
// refusals of them (all while refusals is negative).
type refusingConsumer struct {
	consumertest.LogsSink
	mu        sync.Mutex
	refusals  int
	permanent bool   // refuse with a permanent error
	refusedAt []int  // record counts of the refused batches
	during    func() // run once, within the next batch's ConsumeLogs
}

func (c *refusingConsumer) refuse(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refusals = n
}

// whileConsuming runs f within the next batch's ConsumeLogs, once whether to
// refuse it is decided and before the batch is answered: f stands for what
// happens elsewhere while the batch is being sent.
func (c *refusingConsumer) whileConsuming(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.during = f
}

func (c *refusingConsumer) ConsumeLogs(ctx context.Context, ld plog.Logs) error {
	c.mu.Lock()
	refuse := c.refusals != 0
	if refuse {
		c.refusals--
		c.refusedAt = append(c.refusedAt, ld.LogRecordCount())
	}
	during := c.during
	c.during = nil
	permanent := c.permanent
	c.mu.Unlock()
	if during != nil {
		during()
	}
	if refuse && permanent {
		return consumererror.NewPermanent(errQueueFull)
	}
	if refuse {
		return errQueueFull
	}
	return c.LogsSink.ConsumeLogs(ctx, ld)
}

func newRefusingHarness(t *testing.T, cfg *Config) (*harness, *refusingConsumer) {
	t.Helper()
	clk := newTestClock()
	next := new(refusingConsumer)
	return newHarnessTo(t, NewFactoryWithClock(clk), clk, cfg, component.NewID(metadata.Type), next, &next.LogsSink), next
}

// newRefusingPipelines builds two pipelines sharing one store: flows, whose next consumer is next, and claims.
func newRefusingPipelines(t *testing.T, cfg *Config) (flows *harness, next *refusingConsumer, claims *harness) {
	t.Helper()
	clk := newTestClock()
	f := NewFactoryWithClock(clk)
	id := component.NewID(metadata.Type)
	next = new(refusingConsumer)
	flows = newHarnessTo(t, f, clk, cfg, id, next, &next.LogsSink)
	claims = newHarnessWith(t, f, clk, cfg, id)
	return flows, next, claims
}

// peers returns the peer address of every record the sink received, in
// order.
func (h *harness) peers() []string {
	var out []string
	for _, lr := range h.records() {
		out = append(out, str(lr, flowschema.AttrNetworkPeerAddress))
	}
	return out
}

// unkeyed is a flow record that cannot be looked up: it goes on at once, so
// that a batch carrying it reaches the next consumer.
func unkeyed(lr plog.LogRecord) {
	flow("10.0.0.1", "10.0.0.9", t0, t0)(lr)
	lr.Attributes().Remove(flowschema.AttrNetworkPeerAddress)
}

// A record whose max_wait ran out is released in a batch of its own, after
// the batch whose ConsumeLogs released it: when the next consumer refuses
// it, it waits to be sent again, and the receiver's batch fails with its
// own error only.
func TestRefusedTimeoutReleaseIsKept(t *testing.T) {
	cfg := createDefaultConfig()
	h, next := newRefusingHarness(t, cfg)
	h.clock.Advance(offTick)
	h.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-10*time.Second), t0))
	h.clock.Advance(cfg.MaxWait)

	next.refuse(-1)
	err := h.proc.ConsumeLogs(context.Background(), logsOf(flow("10.0.0.1", "10.0.0.3", t0, t0), unkeyed))
	require.ErrorIs(t, err, errQueueFull)
	assert.Equal(t, []int{1, 1}, next.refusedAt, "the batch (10.0.0.3 is held), then the release on its own")
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "timeout"}, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_release_failures", nil, 0)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_awaiting_resend", nil, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_held", nil, 0)
}

// When only the receiver's batch is refused, the records it released reach
// the next consumer anyway.
func TestReleaseSurvivesRefusedBatch(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.MaxPending = 1
	h, next := newRefusingHarness(t, cfg)
	h.consume(flow("10.0.0.1", "10.0.0.2", t0, t0))

	next.refuse(1)
	err := h.proc.ConsumeLogs(context.Background(), logsOf(flow("10.0.0.1", "10.0.0.3", t0, t0), unkeyed))
	require.ErrorIs(t, err, errQueueFull)
	assert.Equal(t, []string{"10.0.0.2"}, h.peers(), "pushed out of the hold by the refused batch, delivered on its own")
	status, reason, _ := attribution(h.records()[0])
	assert.Equal(t, []string{"unattributed", "hold_overflow"}, []string{status, reason})
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "overflow"}, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_release_failures", nil, 0)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_held", nil, 0)
}

// A refused batch is retried whole by its receiver: the records it put in
// the hold leave the hold again, so that the retry's copies are the only
// ones delivered.
func TestRefusedBatchHeldRecordsDeliveredOnceAfterRetry(t *testing.T) {
	h, next := newRefusingHarness(t, createDefaultConfig())
	batch := func() plog.Logs { return logsOf(flow("10.0.0.1", "10.0.0.2", t0, t0), unkeyed) }

	next.refuse(1)
	require.ErrorIs(t, h.proc.ConsumeLogs(context.Background(), batch()), errQueueFull)
	require.NoError(t, h.proc.ConsumeLogs(context.Background(), batch()), "the receiver's retry")

	h.consume(claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0.Add(time.Second), ""))
	h.clock.Advance(time.Minute)
	h.consumeEmpty()
	assert.Equal(t, []string{"<absent>", "10.0.0.2"}, h.peers())
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "attributed"}, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_held", nil, 0)
}

// A batch larger than max_pending pushes its own records out of the hold;
// when it is refused, those are not delivered either.
func TestRefusedBatchOverflowOfItsOwnRecordsNotDelivered(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.MaxPending = 1
	h, next := newRefusingHarness(t, cfg)

	next.refuse(1)
	err := h.proc.ConsumeLogs(context.Background(), logsOf(flow("10.0.0.1", "10.0.0.2", t0, t0), flow("10.0.0.1", "10.0.0.3", t0, t0), unkeyed))
	require.ErrorIs(t, err, errQueueFull)
	assert.Empty(t, h.peers())
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_held", nil, 0)
	assertCounter(t, h.tel, "otelcol_processor_ownership_release_failures", nil, 0)
}

// On success a record whose wait ran out reaches the next consumer exactly
// once, with its final lookup, besides the batch that released it.
func TestTimeoutReleaseDeliveredOnce(t *testing.T) {
	cfg := createDefaultConfig()
	h, _ := newRefusingHarness(t, cfg)
	h.clock.Advance(offTick)
	h.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-10*time.Second), t0))
	h.clock.Advance(cfg.MaxWait)
	h.consume(unkeyed)
	require.Len(t, h.sink.AllLogs(), 2, "the batch, then the release on its own")
	assert.Equal(t, []string{"<absent>", "10.0.0.2"}, h.peers())
	status, reason, _ := attribution(h.records()[1])
	assert.Equal(t, []string{"unattributed", "no_claim_yet"}, []string{status, reason})

	h.clock.Advance(time.Minute)
	h.consumeEmpty()
	require.NoError(t, h.proc.Shutdown(context.Background()))
	assert.Equal(t, []string{"<absent>", "10.0.0.2"}, h.peers())
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "timeout"}, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_release_failures", nil, 0)
}

// heldBatch is a batch whose flow record to 10.0.0.2 is held, and whose
// unkeyed record takes it to the next consumer.
func heldBatch() plog.Logs {
	return logsOf(flow("10.0.0.1", "10.0.0.2", t0.Add(-30*time.Second), t0), unkeyed)
}

// A claim from another pipeline that covers a record the batch put in the
// hold, applied while the batch is refused downstream, does not send the
// record: the retry brings it, and it goes on once.
func TestClaimDuringRefusedBatchDeliversOnceAfterRetry(t *testing.T) {
	flows, next, claims := newRefusingPipelines(t, createDefaultConfig())
	next.refuse(1)
	next.whileConsuming(func() {
		claims.consume(claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0.Add(time.Second), ""))
	})
	require.ErrorIs(t, flows.proc.ConsumeLogs(context.Background(), heldBatch()), errQueueFull)
	assert.Empty(t, flows.peers(), "released by the claim, withdrawn with the refused batch")
	assertCounter(t, flows.tel, "otelcol_processor_ownership_records_held", nil, 0)

	require.NoError(t, flows.proc.ConsumeLogs(context.Background(), heldBatch()), "the receiver's retry")
	assert.Equal(t, []string{"10.0.0.2", "<absent>"}, flows.peers(), "attributed in the retry, once")
	status, _, owner := attribution(flows.records()[0])
	assert.Equal(t, []string{"attributed", "checkout"}, []string{status, owner})
	assertCounter(t, flows.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "attributed"}, 0)
	assertCounter(t, flows.tel, "otelcol_processor_ownership_release_failures", nil, 0)
	assertCounter(t, flows.tel, "otelcol_processor_ownership_records_held", nil, 0)
}

// When the batch is accepted, the record that a claim released while the
// batch was being sent follows it, once, in a batch of its own.
func TestClaimDuringBatchReleasesAfterIt(t *testing.T) {
	flows, next, claims := newRefusingPipelines(t, createDefaultConfig())
	next.whileConsuming(func() {
		claims.consume(claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0.Add(time.Second), ""))
	})
	require.NoError(t, flows.proc.ConsumeLogs(context.Background(), heldBatch()))
	require.Len(t, flows.sink.AllLogs(), 2, "the batch, then the released record on its own")
	assert.Equal(t, []string{"<absent>", "10.0.0.2"}, flows.peers())
	status, _, owner := attribution(flows.records()[1])
	assert.Equal(t, []string{"attributed", "checkout"}, []string{status, owner})
	assertCounter(t, flows.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "attributed"}, 1)
	assertCounter(t, flows.tel, "otelcol_processor_ownership_lookups", map[string]string{"status": "attributed"}, 1)
	assertCounter(t, flows.tel, "otelcol_processor_ownership_records_held", nil, 0)

	require.NoError(t, flows.proc.Shutdown(context.Background()))
	assert.Equal(t, []string{"<absent>", "10.0.0.2"}, flows.peers(), "left the hold once")
}

// A record whose max_wait runs out, at the start of a concurrent batch,
// while the batch that held it is refused downstream, is not sent: the
// retry brings it, and it times out once.
func TestExpiryDuringRefusedBatchDeliversOnceAfterRetry(t *testing.T) {
	cfg := createDefaultConfig()
	h, next := newRefusingHarness(t, cfg)
	h.clock.Advance(offTick)
	next.refuse(1)
	next.whileConsuming(func() {
		h.clock.Advance(cfg.MaxWait)
		h.consumeEmpty()
	})
	require.ErrorIs(t, h.proc.ConsumeLogs(context.Background(), heldBatch()), errQueueFull)
	assert.Empty(t, h.peers(), "expired, withdrawn with the refused batch")
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_held", nil, 0)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "timeout"}, 0)

	require.NoError(t, h.proc.ConsumeLogs(context.Background(), heldBatch()), "the receiver's retry")
	h.clock.Advance(31 * time.Second)
	h.consumeEmpty()
	assert.Equal(t, []string{"<absent>", "10.0.0.2"}, h.peers())
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "timeout"}, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_held", nil, 0)
}

// The clock callback's max_wait release of a record whose batch is being
// sent waits for the batch: the record follows it.
func TestClockExpiryDuringBatchReleasesAfterIt(t *testing.T) {
	h, next := newRefusingHarness(t, createDefaultConfig())
	next.whileConsuming(func() {
		h.clock.Advance(31 * time.Second) // runs the callback
	})
	require.NoError(t, h.proc.ConsumeLogs(context.Background(), heldBatch()))
	require.Len(t, h.sink.AllLogs(), 2, "the batch, then the released record on its own")
	assert.Equal(t, []string{"<absent>", "10.0.0.2"}, h.peers())
	status, reason, _ := attribution(h.records()[1])
	assert.Equal(t, []string{"unattributed", "no_claim_yet"}, []string{status, reason})
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "timeout"}, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_held", nil, 0)
}

// A concurrent batch that pushes a record out of the full hold while the
// batch that held it is refused downstream does not send it: the retry
// brings it back into the hold, and it leaves once.
func TestOverflowDuringRefusedBatchDeliversOnceAfterRetry(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.MaxPending = 1
	h, next := newRefusingHarness(t, cfg)
	next.refuse(1)
	next.whileConsuming(func() {
		h.consume(flow("10.0.0.1", "10.0.0.3", t0, t0), unkeyed)
	})
	require.ErrorIs(t, h.proc.ConsumeLogs(context.Background(), heldBatch()), errQueueFull)
	assert.Equal(t, []string{"<absent>"}, h.peers(), "the concurrent batch only; 10.0.0.3 is held")
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_held", nil, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "overflow"}, 0)

	require.NoError(t, h.proc.ConsumeLogs(context.Background(), heldBatch()), "the receiver's retry")
	require.NoError(t, h.proc.Shutdown(context.Background()))
	assert.Equal(t, []string{"<absent>", "<absent>", "10.0.0.3", "10.0.0.2"}, h.peers(),
		"10.0.0.3 pushed out by the retry, 10.0.0.2 flushed at shutdown")
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "overflow"}, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "shutdown"}, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_held", nil, 0)
}

// firstAttemptRefuser refuses every batch carrying a record whose attempt
// attribute is 0, and passes the others on to its sink.
type firstAttemptRefuser struct{ consumertest.LogsSink }

func (c *firstAttemptRefuser) ConsumeLogs(ctx context.Context, ld plog.Logs) error {
	for _, rl := range ld.ResourceLogs().All() {
		for _, sl := range rl.ScopeLogs().All() {
			for _, lr := range sl.LogRecords().All() {
				if v, ok := lr.Attributes().Get("attempt"); ok && v.Int() == 0 {
					return errQueueFull
				}
			}
		}
	}
	return c.LogsSink.ConsumeLogs(ctx, ld)
}

// Batches refused once and retried race claims that release their held
// records from another pipeline: every flow record goes on exactly once.
func TestConcurrentClaimsAndRetriesDeliverOnce(t *testing.T) {
	clk := newTestClock()
	f := NewFactoryWithClock(clk)
	cfg := createDefaultConfig()
	id := component.NewID(metadata.Type)
	next := new(firstAttemptRefuser)
	flows := newHarnessTo(t, f, clk, cfg, id, next, &next.LogsSink)
	claims := newHarnessWith(t, f, clk, cfg, id)

	const keys = 500
	addr := func(i int) string { return fmt.Sprintf("10.0.%d.%d", i/250, i%250+1) }
	// The claim of each address races the first attempt of the batch
	// that holds a record for it.
	started := make(chan int, keys)
	var wg sync.WaitGroup
	wg.Add(2)
	// require may not stop the test from these goroutines: assert only.
	go func() {
		defer wg.Done()
		defer close(started)
		for i := range keys {
			for attempt := range 2 {
				ld := logsOf(flow("10.9.9.9", addr(i), t0.Add(-30*time.Second), t0),
					with(unkeyed, func(lr plog.LogRecord) { lr.Attributes().PutInt("attempt", int64(attempt)) }))
				if attempt == 0 {
					started <- i
				}
				err := flows.proc.ConsumeLogs(context.Background(), ld)
				if attempt == 0 {
					assert.ErrorIs(t, err, errQueueFull)
				} else {
					assert.NoError(t, err)
				}
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := range started {
			assert.NoError(t, claims.proc.ConsumeLogs(context.Background(), logsOf(claim(addr(i), "owner", t0.Add(-time.Minute), t0, ""))))
		}
	}()
	wg.Wait()
	require.NoError(t, flows.proc.Shutdown(context.Background()))

	seen := make(map[string]int)
	for _, p := range flows.peers() {
		seen[p]++
	}
	assert.Equal(t, keys, seen["<absent>"], "the retries' unkeyed records")
	for i := range keys {
		assert.Equal(t, 1, seen[addr(i)], addr(i))
	}
	assert.Len(t, seen, keys+1)
	assertCounter(t, flows.tel, "otelcol_processor_ownership_release_failures", nil, 0)
	assertCounter(t, flows.tel, "otelcol_processor_ownership_records_held", nil, 0)
}

// A Shutdown while a batch that held a record is still downstream flushes
// that record with the others, rather than leaving it to the batch, which
// may return only after the collector shut down the next consumer.
func TestShutdownDuringBatchFlushesItsHeldRecords(t *testing.T) {
	h, next := newRefusingHarness(t, createDefaultConfig())
	var atShutdown []string
	next.whileConsuming(func() {
		require.NoError(t, h.proc.Shutdown(context.Background()))
		atShutdown = h.peers()
	})
	require.NoError(t, h.proc.ConsumeLogs(context.Background(), heldBatch()))
	assert.Equal(t, []string{"10.0.0.2"}, atShutdown, "flushed by Shutdown")
	assert.Equal(t, []string{"10.0.0.2", "<absent>"}, h.peers(), "once")
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "shutdown"}, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_held", nil, 0)
}

// A panic downstream settles the batch as refused: its held records do not
// stay tentative for good, and the hold's gauge comes back down.
func TestPanicDownstreamSettlesTheBatch(t *testing.T) {
	flows, next, claims := newRefusingPipelines(t, createDefaultConfig())
	next.whileConsuming(func() { panic("exporter bug") })
	func() {
		defer func() { require.NotNil(t, recover()) }()
		_ = flows.proc.ConsumeLogs(context.Background(), heldBatch())
	}()
	assertCounter(t, flows.tel, "otelcol_processor_ownership_records_held", nil, 0)
	claims.consume(claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0.Add(time.Second), ""))
	require.NoError(t, flows.proc.Shutdown(context.Background()))
	assert.Empty(t, flows.peers(), "like a refused batch, left to the client's retry")
}
