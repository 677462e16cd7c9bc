package ownershipprocessor

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowattr/flowattr/internal/flowschema"
)

// TestForwardOnlyAcceptedClaims is the configuration of a pipeline that
// sends this collector's claims to peers or a topic: keep_claims
// with keep_flows false passes on the claims the processor accepted and
// nothing else; flows and rejected claims stop here.
func TestForwardOnlyAcceptedClaims(t *testing.T) {
	cfg := noHoldConfig()
	cfg.KeepClaims = true
	cfg.KeepFlows = false
	cfg.Senders = map[string][]string{"node-a": {"10.0.0.0/24"}}
	require.NoError(t, cfg.Validate())
	h := newHarness(t, cfg)
	h.consume(
		claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, "node-a"),
		claim("10.9.0.2", "checkout", t0.Add(-time.Minute), t0, "node-a"), // outside node-a's CIDRs
		claim("10.0.0.3", "evil", t0.Add(-time.Minute), t0, "rogue"),      // unknown source
		ownedFlow("10.0.0.1", "web", "10.0.0.2", t0.Add(-30*time.Second), t0),
	)
	recs := h.records()
	require.Len(t, recs, 1, "only the accepted claim is passed on")
	assert.Equal(t, flowschema.EventClaim, recs[0].EventName())
	assert.Equal(t, "10.0.0.2", str(recs[0], flowschema.AttrClaimAddress))
	assertCounter(t, h.tel, "otelcol_processor_ownership_claims_rejected", map[string]string{"reason": "unauthorized_sender"}, 2)
	assertCounter(t, h.tel, "otelcol_processor_ownership_claims_applied", nil, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_local_claims_applied", nil, 1)
}

func TestKeepFlowsFalseWithoutLocalClaims(t *testing.T) {
	cfg := noHoldConfig()
	cfg.KeepFlows = false
	cfg.ApplyLocalClaims = false
	h := newHarness(t, cfg)
	h.consume(ownedFlow("10.0.0.1", "web", "10.0.0.2", t0.Add(-30*time.Second), t0))
	assert.Zero(t, h.sink.LogRecordCount(), "the flow is removed")
	assertCounter(t, h.tel, "otelcol_processor_ownership_local_claims_applied", nil, 0)
}

// TestKeepClaimsDropsRejected checks that a forwarding pipeline that
// keeps flows too still drops the claims it rejected.
func TestKeepClaimsDropsRejected(t *testing.T) {
	cfg := noHoldConfig()
	cfg.KeepClaims = true
	cfg.Senders = map[string][]string{"node-a": {"10.0.0.0/24"}}
	h := newHarness(t, cfg)
	h.consume(
		claim("10.0.0.3", "evil", t0.Add(-time.Minute), t0, "rogue"),
		flow("10.0.0.1", "10.0.0.3", t0.Add(-30*time.Second), t0),
	)
	recs := h.records()
	require.Len(t, recs, 1)
	assert.Equal(t, flowschema.EventFlow, recs[0].EventName())
	_, _, owner := attribution(recs[0])
	assert.Equal(t, "<absent>", owner)
}

// TestKeepClaimsDropsRefused checks that a claim the store refuses
// (older than its retention) is not passed on, while the accepted ones
// around it are, in order.
func TestKeepClaimsDropsRefused(t *testing.T) {
	cfg := noHoldConfig()
	cfg.KeepClaims = true
	cfg.KeepFlows = false
	cfg.Senders = map[string][]string{"node-a": {"10.0.0.0/24"}}
	require.NoError(t, cfg.Validate())
	h := newHarness(t, cfg)
	h.consume(
		claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, "node-a"),
		claim("10.0.0.4", "checkout", t0.Add(-time.Hour), t0.Add(-20*time.Minute), "node-a"), // expired
		claim("10.0.0.5", "cart", t0.Add(-time.Minute), t0, "node-a"),
	)
	recs := h.records()
	require.Len(t, recs, 2, "only the applied claims are passed on")
	assert.Equal(t, "10.0.0.2", str(recs[0], flowschema.AttrClaimAddress))
	assert.Equal(t, "10.0.0.5", str(recs[1], flowschema.AttrClaimAddress))
	assertCounter(t, h.tel, "otelcol_processor_ownership_claims_rejected", map[string]string{"reason": "expired"}, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_claims_applied", nil, 2)
}
