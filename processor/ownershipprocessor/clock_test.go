package ownershipprocessor

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadata"
)

func newInjectedHarness(t *testing.T, cfg *Config) *harness {
	t.Helper()
	clk := newFakeClock()
	return newHarnessWith(t, NewFactoryWithClock(clk), clk, cfg, component.NewID(metadata.Type))
}

// consumeEmpty lets time pass for the processor without records.
func (h *harness) consumeEmpty() {
	h.t.Helper()
	require.NoError(h.t, h.proc.ConsumeLogs(context.Background(), plog.NewLogs()))
}

// A flow that starts within clock_skew of the end of its peer's newest range
// waits for the next heartbeat: until then, another owner may still claim
// the time just after.
func TestNearUnclaimedEdgeWaitsForTheNextHeartbeat(t *testing.T) {
	h := newInjectedHarness(t, createDefaultConfig())
	h.consume(heartbeat("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, ""))
	h.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-500*time.Millisecond), t0))
	require.Equal(t, 0, h.sink.LogRecordCount(), "held: t0+500ms is not covered yet")

	h.consume(heartbeat("10.0.0.2", "checkout", t0, t0.Add(10*time.Second), ""))
	recs := h.records()
	require.Len(t, recs, 1)
	status, reason, owner := attribution(recs[0])
	assert.Equal(t, []string{"attributed", "<absent>", "checkout"}, []string{status, reason, owner})
}

// The case the fleet simulator found: the recording host's clock puts a flow
// just inside the new owner's first claim, and the previous owner's last
// claim arrives later. The flow is held and then turns uncertain; it is never
// attributed to the new owner.
func TestNearUnclaimedEdgeTurnsUncertainWhenThePreviousOwnerArrives(t *testing.T) {
	h := newInjectedHarness(t, createDefaultConfig())
	h.consume(heartbeat("10.0.0.2", "cart", t0, t0.Add(10*time.Second), ""))
	h.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(300*time.Millisecond), t0.Add(time.Second)))
	require.Equal(t, 0, h.sink.LogRecordCount(), "held: the time before t0 is not covered yet")

	h.consume(heartbeat("10.0.0.2", "checkout", t0.Add(-time.Minute), t0.Add(-time.Millisecond), ""))
	recs := h.records()
	require.Len(t, recs, 1)
	status, reason, owner := attribution(recs[0])
	assert.Equal(t, []string{"uncertain", "near_owner_change", "<absent>"}, []string{status, reason, owner})
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "decided"}, 1)
}

// With an injected clock nothing runs in the background: a record whose
// max_wait is over leaves in the output of the next ConsumeLogs, with its
// final lookup, and not a nanosecond earlier.
func TestInjectedClockReleasesInConsumeLogs(t *testing.T) {
	cfg := createDefaultConfig()
	h := newInjectedHarness(t, cfg)
	assert.Equal(t, 0, h.clock.tickerCount(), "no background goroutine with an injected clock")

	h.consume(heartbeat("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, ""))
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

	h.clock.Advance(cfg.MaxWait)
	h.consumeEmpty()
	recs = h.records()
	require.Len(t, recs, 2, "an empty batch lets time pass")
	assert.Equal(t, "10.0.0.3", str(recs[1], flowschema.AttrNetworkPeerAddress))
}

func TestInjectedClockPrunesInConsumeLogs(t *testing.T) {
	h := newInjectedHarness(t, noHoldConfig())
	h.consume(heartbeat("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, ""))
	h.clock.Advance(20 * time.Minute) // past retention
	assertCounter(t, h.tel, "otelcol_processor_ownership_keys", nil, 1)
	h.consumeEmpty()
	assertCounter(t, h.tel, "otelcol_processor_ownership_keys", nil, 0)
}

// With the wall-clock factory the hold ticker and ConsumeLogs both release
// expired records; racing, they release each exactly once.
func TestTickerAndConsumeLogsReleaseEachRecordOnce(t *testing.T) {
	h := newHarness(t, createDefaultConfig())
	require.Eventually(t, func() bool { return h.clock.tickerCount() == 2 }, 5*time.Second, time.Millisecond)
	const n = 500
	for i := range n {
		h.consume(flow("10.0.0.1", "10.1.0.1", t0.Add(-time.Duration(i)*time.Millisecond), t0))
	}
	require.Equal(t, 0, h.sink.LogRecordCount())

	var wg sync.WaitGroup
	wg.Go(func() {
		for range 50 {
			h.clock.Advance(time.Second) // fires the hold ticker once max_wait is over
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
