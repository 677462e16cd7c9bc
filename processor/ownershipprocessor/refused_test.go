package ownershipprocessor

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
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
	refusedAt []int // record counts of the refused batches
}

func (c *refusingConsumer) refuse(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refusals = n
}

func (c *refusingConsumer) ConsumeLogs(ctx context.Context, ld plog.Logs) error {
	c.mu.Lock()
	if c.refusals != 0 {
		c.refusals--
		c.refusedAt = append(c.refusedAt, ld.LogRecordCount())
		c.mu.Unlock()
		return errQueueFull
	}
	c.mu.Unlock()
	return c.LogsSink.ConsumeLogs(ctx, ld)
}

func newRefusingHarness(t *testing.T, cfg *Config) (*harness, *refusingConsumer) {
	t.Helper()
	clk := newFakeClock()
	next := new(refusingConsumer)
	return newHarnessTo(t, NewFactoryWithClock(clk), clk, cfg, component.NewID(metadata.Type), next, &next.LogsSink), next
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
// it, the refusal is counted and logged, and the receiver's batch fails
// with its own error only.
func TestRefusedTimeoutReleaseIsCounted(t *testing.T) {
	h, next := newRefusingHarness(t, createDefaultConfig())
	h.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-10*time.Second), t0))
	h.clock.Advance(31 * time.Second)

	next.refuse(-1)
	err := h.proc.ConsumeLogs(context.Background(), logsOf(flow("10.0.0.1", "10.0.0.3", t0, t0), unkeyed))
	require.ErrorIs(t, err, errQueueFull)
	assert.Equal(t, []int{1, 1}, next.refusedAt, "the batch (10.0.0.3 is held), then the release on its own")
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "timeout"}, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_release_failures", nil, 1)
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

	h.consume(heartbeat("10.0.0.2", "checkout", t0.Add(-time.Minute), t0.Add(time.Second), ""))
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
	h, _ := newRefusingHarness(t, createDefaultConfig())
	h.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-10*time.Second), t0))
	h.clock.Advance(31 * time.Second)
	h.consume(unkeyed)
	require.Len(t, h.sink.AllLogs(), 2, "the batch, then the release on its own")
	assert.Equal(t, []string{"<absent>", "10.0.0.2"}, h.peers())
	status, reason, _ := attribution(h.records()[1])
	assert.Equal(t, []string{"unattributed", "no_heartbeat_yet"}, []string{status, reason})

	h.clock.Advance(time.Minute)
	h.consumeEmpty()
	require.NoError(t, h.proc.Shutdown(context.Background()))
	assert.Equal(t, []string{"<absent>", "10.0.0.2"}, h.peers())
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "timeout"}, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_release_failures", nil, 0)
}
