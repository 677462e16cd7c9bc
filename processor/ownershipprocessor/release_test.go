package ownershipprocessor

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadata"
)

// ConsumeLogs first does the time-driven work that has fallen due since the
// clock callbacks last ran: a record whose max_wait runs out between two
// calls of the callback that releases held records leaves in the output of
// the next ConsumeLogs, with its final lookup, and not a nanosecond earlier.
func TestConsumeLogsReleasesExpiredRecords(t *testing.T) {
	cfg := createDefaultConfig()
	h := newHarness(t, cfg)
	assert.Equal(t, 2, h.clock.callbackCount(), "pruning and releasing held records")

	h.clock.Advance(offTick)
	h.consume(claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, ""))
	h.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-500*time.Millisecond), t0))
	h.clock.Advance(cfg.MaxWait - time.Nanosecond)
	h.consumeEmpty()
	require.Equal(t, 0, h.sink.LogRecordCount(), "max_wait not over")

	h.clock.Advance(time.Nanosecond)
	h.consume(flow("10.0.0.1", "10.0.0.3", t0.Add(-10*time.Second), t0)) // held too
	require.Len(t, h.sink.AllLogs(), 1, "released within this ConsumeLogs")
	recs := h.records()
	require.Len(t, recs, 1)
	status, reason, _ := attribution(recs[0])
	assert.Equal(t, []string{"unattributed", "near_unclaimed_edge"}, []string{status, reason},
		"at max_wait the edge is still unclaimed: sent on unattributed")
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "timeout"}, 1)

	h.clock.Advance(cfg.MaxWait + holdCheckInterval(cfg.MaxWait))
	recs = h.records()
	require.Len(t, recs, 2, "without a batch, the clock callback releases it")
	assert.Equal(t, "10.0.0.3", str(recs[1], flowschema.AttrNetworkPeerAddress))
}

// A ConsumeLogs prunes the store once the prune interval has passed since
// the last prune, as when the clock callback that prunes runs late.
func TestConsumeLogsPrunesWhenDue(t *testing.T) {
	cfg := noHoldConfig()
	h := newHarness(t, cfg)
	h.consume(claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0.Add(10*time.Second), ""))
	every := pruneInterval(cfg.Retention)
	// Past retention for the claim, but not yet at the last prune callback.
	h.clock.Advance(cfg.Retention + every/2)
	assertCounter(t, h.tel, "otelcol_processor_ownership_keys", nil, 1)

	h.proc.(*ownershipProcessor).shared.lastPrune.Store(h.clock.Now().Add(-every).UnixNano())
	h.consumeEmpty()
	assertCounter(t, h.tel, "otelcol_processor_ownership_keys", nil, 0)
}

// The clock callback and ConsumeLogs both release expired records; racing,
// they release each exactly once.
func TestTickerAndConsumeLogsReleaseEachRecordOnce(t *testing.T) {
	h := newHarness(t, createDefaultConfig())
	require.Equal(t, 2, h.clock.callbackCount())
	const n = 500
	for i := range n {
		h.consume(flow("10.0.0.1", "10.1.0.1", t0.Add(-time.Duration(i)*time.Millisecond), t0))
	}
	require.Equal(t, 0, h.sink.LogRecordCount())

	var wg sync.WaitGroup
	wg.Go(func() {
		for range 50 {
			h.clock.Advance(time.Second) // runs the hold callback, past max_wait too
		}
	})
	for range 50 {
		require.NoError(t, h.proc.ConsumeLogs(context.Background(), plog.NewLogs()))
	}
	wg.Wait()
	h.consumeEmpty() // the clock is past max_wait now: whatever is left goes
	recs := h.waitRecords(n)
	seen := make(map[string]bool, n)
	for _, r := range recs {
		ts := str(r, flowschema.AttrFlowStartTime)
		assert.False(t, seen[ts], "released twice: %s", ts)
		seen[ts] = true
	}
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "timeout"}, n)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_held", nil, 0)
}

// TestReleasesCarryNoRequestContext: a record pushed out of a full hold by
// another request's batch goes on without that request's context (its
// client metadata, say), which is not its own.
func TestReleasesCarryNoRequestContext(t *testing.T) {
	type tenantKey struct{}
	cfg := createDefaultConfig()
	cfg.MaxPending = 1
	h := newHarness(t, cfg)
	tenant := func(name string) context.Context { return context.WithValue(context.Background(), tenantKey{}, name) }
	require.NoError(t, h.proc.ConsumeLogs(tenant("a"), logsOf(flow("10.0.0.1", "10.0.0.2", t0.Add(-time.Second), t0))))
	require.NoError(t, h.proc.ConsumeLogs(tenant("b"), logsOf(flow("10.0.0.1", "10.0.0.3", t0.Add(-time.Second), t0))))
	require.Equal(t, []string{"10.0.0.2"}, h.peers(), "the first record, pushed out by the second")
	for _, ctx := range h.sink.Contexts() {
		assert.Nil(t, ctx.Value(tenantKey{}), "a released record went on with another request's context")
	}
}

// blockingConsumer blocks every ConsumeLogs until its context ends, as an
// exporter without a queue retrying a dead backend does.
type blockingConsumer struct{ entered chan struct{} }

func (blockingConsumer) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

func (c blockingConsumer) ConsumeLogs(ctx context.Context, _ plog.Logs) error {
	select {
	case c.entered <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return ctx.Err()
}

// TestShutdownCancelsBlockedReleases: a release the clock started is stuck
// in a next consumer that never answers; Shutdown must return once its own
// context ends, and count the record it could not deliver.
func TestShutdownCancelsBlockedReleases(t *testing.T) {
	cfg := createDefaultConfig()
	clk := newTestClock()
	next := blockingConsumer{entered: make(chan struct{}, 1)}
	h := newHarnessTo(t, NewFactoryWithClock(clk), clk, cfg, component.NewID(metadata.Type), next, new(consumertest.LogsSink))
	h.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-time.Second), t0))
	advanced := make(chan struct{})
	go func() {
		clk.Advance(cfg.MaxWait) // releases the record into the blocked consumer
		close(advanced)
	}()
	<-next.entered

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	shut := make(chan error)
	go func() { shut <- h.proc.Shutdown(ctx) }()
	select {
	case err := <-shut:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown waits for a release blocked downstream")
	}
	<-advanced
	assertCounter(t, h.tel, "otelcol_processor_ownership_release_failures", nil, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_awaiting_resend", nil, 0)
}
