package ownershipprocessor

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"
)

// Records released at max_wait that the next consumer refuses with a
// retryable error wait in the outbox, and the clock callback sends them
// again, in their batch, whole, until it is accepted: each arrives once,
// with the attribution it was released with.
func TestRefusedTimeoutReleaseResentOnce(t *testing.T) {
	cfg := createDefaultConfig()
	h, next := newRefusingHarness(t, cfg)
	h.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-10*time.Second), t0), flow("10.0.0.1", "10.0.0.3", t0.Add(-10*time.Second), t0))
	require.Zero(t, h.sink.LogRecordCount(), "both held")

	next.refuse(2)
	h.clock.Advance(cfg.MaxWait) // released and refused
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_awaiting_resend", nil, 2)
	h.clock.Advance(holdCheckInterval(cfg.MaxWait)) // sent again and refused
	assert.Empty(t, h.peers())
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_awaiting_resend", nil, 2)
	h.clock.Advance(holdCheckInterval(cfg.MaxWait)) // accepted

	assert.Equal(t, []int{2, 2}, next.refusedAt, "the release, resent whole")
	require.Len(t, h.sink.AllLogs(), 1)
	assert.Equal(t, []string{"10.0.0.2", "10.0.0.3"}, h.peers())
	for _, lr := range h.records() {
		status, reason, _ := attribution(lr)
		assert.Equal(t, []string{"unattributed", "no_claim_yet"}, []string{status, reason})
	}

	h.clock.Advance(time.Minute)
	h.consumeEmpty()
	require.NoError(t, h.proc.Shutdown(context.Background()))
	assert.Equal(t, []string{"10.0.0.2", "10.0.0.3"}, h.peers(), "once")
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "timeout"}, 2)
	assertCounter(t, h.tel, "otelcol_processor_ownership_lookups", map[string]string{"status": "unattributed"}, 2)
	assertCounter(t, h.tel, "otelcol_processor_ownership_release_failures", nil, 0)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_awaiting_resend", nil, 0)
	assertItems(t, h.tel, 2, 6) // every attempt is handed on
}

// Records a claim released that the next consumer refuses with a retryable
// error are sent again at the start of the pipeline's next ConsumeLogs,
// attributed as when the claim released them, once.
func TestRefusedClaimReleaseResentOnce(t *testing.T) {
	flows, next, claims := newRefusingPipelines(t, createDefaultConfig())
	flows.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-10*time.Second), t0))

	next.refuse(1)
	claims.consume(claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0.Add(time.Second), ""))
	assert.Empty(t, flows.peers())
	assertCounter(t, flows.tel, "otelcol_processor_ownership_records_awaiting_resend", nil, 1)
	// A later claim for the address changes nothing: the attribution is final.
	claims.consume(claim("10.0.0.2", "other", t0.Add(-time.Minute), t0.Add(time.Second), ""))

	flows.consume(unkeyed)
	assert.Equal(t, []string{"10.0.0.2", "<absent>"}, flows.peers(), "resent before the batch")
	status, _, owner := attribution(flows.records()[0])
	assert.Equal(t, []string{"attributed", "checkout"}, []string{status, owner})

	flows.clock.Advance(time.Minute)
	require.NoError(t, flows.proc.Shutdown(context.Background()))
	assert.Equal(t, []string{"10.0.0.2", "<absent>"}, flows.peers(), "once")
	assert.Equal(t, []int{1}, next.refusedAt)
	assertCounter(t, flows.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "attributed"}, 1)
	assertCounter(t, flows.tel, "otelcol_processor_ownership_release_failures", nil, 0)
	assertCounter(t, flows.tel, "otelcol_processor_ownership_records_awaiting_resend", nil, 0)
}

// A permanent refusal of released records drops them, counted; they are
// not sent again.
func TestPermanentlyRefusedReleaseNotResent(t *testing.T) {
	cfg := createDefaultConfig()
	h, next := newRefusingHarness(t, cfg)
	h.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-10*time.Second), t0))
	next.permanent = true
	next.refuse(1)
	h.clock.Advance(cfg.MaxWait)
	assertCounter(t, h.tel, "otelcol_processor_ownership_release_failures", nil, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_awaiting_resend", nil, 0)

	h.clock.Advance(time.Minute)
	h.consumeEmpty()
	require.NoError(t, h.proc.Shutdown(context.Background()))
	assert.Equal(t, []int{1}, next.refusedAt, "never sent again")
	assert.Empty(t, h.peers())
	assertCounter(t, h.tel, "otelcol_processor_ownership_release_failures", nil, 1)
}

// At most max_pending released records wait to be sent again: beyond it
// the oldest are dropped, counted, whole batches or part of one; the
// others go on, oldest first, once the next consumer accepts them.
func TestOutboxDropsOldestBeyondMaxPending(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.MaxPending = 2
	h, next := newRefusingHarness(t, cfg)
	next.refuse(-1)
	expireWith := func(peers ...string) {
		var flows []func(plog.LogRecord)
		for _, p := range peers {
			flows = append(flows, flow("10.0.0.1", p, t0.Add(-10*time.Second), t0))
		}
		h.consume(flows...)
		h.clock.Advance(cfg.MaxWait)
	}
	expireWith("10.0.0.2", "10.0.0.3")
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_awaiting_resend", nil, 2)
	expireWith("10.0.0.4", "10.0.0.5")
	assertCounter(t, h.tel, "otelcol_processor_ownership_release_failures", nil, 2)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_awaiting_resend", nil, 2)
	expireWith("10.0.0.6")
	assertCounter(t, h.tel, "otelcol_processor_ownership_release_failures", nil, 3)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_awaiting_resend", nil, 2)
	assert.Empty(t, h.peers())

	next.refuse(0)
	h.clock.Advance(holdCheckInterval(cfg.MaxWait))
	assert.Equal(t, []string{"10.0.0.5", "10.0.0.6"}, h.peers(), "the newest, oldest first")
	require.NoError(t, h.proc.Shutdown(context.Background()))
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "timeout"}, 5)
	assertCounter(t, h.tel, "otelcol_processor_ownership_release_failures", nil, 3)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_awaiting_resend", nil, 0)
}

// At shutdown, the records waiting to be sent again and those still held
// get one last attempt each; what a still refusing next consumer refuses
// then is counted, and Shutdown returns.
func TestShutdownWithRefusingConsumerCountsTheRest(t *testing.T) {
	cfg := createDefaultConfig()
	h, next := newRefusingHarness(t, cfg)
	next.refuse(-1)
	h.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-10*time.Second), t0))
	h.clock.Advance(cfg.MaxWait)
	h.consume(flow("10.0.0.1", "10.0.0.3", t0.Add(-10*time.Second), t0))
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_awaiting_resend", nil, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_held", nil, 1)
	refusedBefore := len(next.refusedAt)

	require.NoError(t, h.proc.Shutdown(context.Background()))
	assert.Len(t, next.refusedAt, refusedBefore+2, "one last attempt each: the waiting batch, then the held record")
	assert.Empty(t, h.peers())
	assertCounter(t, h.tel, "otelcol_processor_ownership_release_failures", nil, 2)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_awaiting_resend", nil, 0)
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_held", nil, 0)
}
