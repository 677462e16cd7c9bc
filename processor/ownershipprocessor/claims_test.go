package ownershipprocessor

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
)

func TestClaimAttributesLaterFlow(t *testing.T) {
	h := newHarness(t, noHoldConfig())
	h.consume(claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, ""))
	assert.Equal(t, 0, h.sink.LogRecordCount(), "claims are removed from the stream")

	h.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-30*time.Second), t0))
	recs := h.records()
	require.Len(t, recs, 1)
	status, reason, owner := attribution(recs[0])
	assert.Equal(t, "attributed", status)
	assert.Equal(t, "<absent>", reason)
	assert.Equal(t, "checkout", owner)
	assert.Equal(t, "checkout-svc", str(recs[0], flowschema.PrefixPeerOwner+"service.name"))
}

func TestClaimInSameBatchAsFlow(t *testing.T) {
	h := newHarness(t, noHoldConfig())
	h.consume(
		flow("10.0.0.1", "10.0.0.2", t0.Add(-30*time.Second), t0),
		claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, ""),
	)
	recs := h.records()
	require.Len(t, recs, 1)
	status, _, owner := attribution(recs[0])
	assert.Equal(t, "attributed", status)
	assert.Equal(t, "checkout", owner)
}

func TestKeepClaims(t *testing.T) {
	cfg := noHoldConfig()
	cfg.KeepClaims = true
	h := newHarness(t, cfg)
	h.consume(claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, ""))
	recs := h.records()
	require.Len(t, recs, 1)
	assert.Equal(t, flowschema.EventClaim, recs[0].EventName())
	assert.Equal(t, "10.0.0.2", str(recs[0], flowschema.AttrClaimAddress))
}

func TestRejectedClaimsNeverTouchStore(t *testing.T) {
	base := claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, "node-a")
	tests := []struct {
		name   string
		cfg    func(*Config)
		record func(plog.LogRecord)
		reason string
	}{
		{"missing address", nil, with(base, func(lr plog.LogRecord) { lr.Attributes().Remove(flowschema.AttrClaimAddress) }), "missing_address"},
		{"bad address", nil, with(base, func(lr plog.LogRecord) { lr.Attributes().PutStr(flowschema.AttrClaimAddress, "10.0.0.300") }), "bad_address"},
		{"missing owner", nil, with(base, func(lr plog.LogRecord) { lr.Attributes().Remove(flowschema.PrefixClaimOwner + "id") }), "missing_owner"},
		{"missing time", nil, with(base, func(lr plog.LogRecord) { lr.Attributes().PutStr(flowschema.AttrClaimStartTime, "yesterday") }), "missing_time"},
		{"end before start", nil, with(base, func(lr plog.LogRecord) {
			lr.Attributes().PutInt(flowschema.AttrClaimStartTime, t0.Add(time.Hour).UnixNano())
		}), "end_before_start"},
		{"end in future", nil, claim("10.0.0.2", "checkout", t0, t0.Add(2*time.Minute), ""), "end_in_future"},
		{"expired", nil, claim("10.0.0.2", "checkout", t0.Add(-time.Hour), t0.Add(-20*time.Minute), ""), "expired"},
		{"unknown source", func(c *Config) { c.Senders = map[string][]string{"node-b": {"10.0.0.0/8"}} }, base, "unauthorized_sender"},
		{
			"no source", func(c *Config) { c.Senders = map[string][]string{"node-a": {"10.0.0.0/8"}} },
			claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, ""), "unauthorized_sender",
		},
		{"address outside source CIDRs", func(c *Config) { c.Senders = map[string][]string{"node-a": {"10.1.0.0/16"}} }, base, "unauthorized_sender"},
		{"outside workload", func(c *Config) { c.WorkloadCIDRs = []string{"10.1.0.0/16"} }, base, "outside_workload_cidrs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := noHoldConfig()
			if tt.cfg != nil {
				tt.cfg(cfg)
			}
			require.NoError(t, cfg.Validate())
			h := newHarness(t, cfg)
			h.consume(tt.record)
			assert.Equal(t, 0, h.sink.LogRecordCount(), "rejected claims are removed too")
			assertCounter(t, h.tel, "otelcol_processor_ownership_claims_rejected",
				map[string]string{"reason": tt.reason}, 1)
			assertCounter(t, h.tel, "otelcol_processor_ownership_claims_applied", nil, 0)

			h.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-30*time.Second), t0))
			_, _, owner := attribution(h.records()[0])
			assert.Equal(t, "<absent>", owner)
		})
	}
}

func TestAuthorizedSourceApplies(t *testing.T) {
	cfg := noHoldConfig()
	cfg.Senders = map[string][]string{"node-a": {"10.0.0.0/24"}, "node-b": {"10.0.1.0/24"}}
	h := newHarness(t, cfg)
	h.consume(claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, "node-a"))
	// node-b stealing node-a's address is refused.
	h.consume(claim("10.0.0.2", "rogue", t0.Add(-time.Minute), t0, "node-b"))
	h.consume(flow("10.0.1.1", "10.0.0.2", t0.Add(-30*time.Second), t0))
	status, _, owner := attribution(h.records()[0])
	assert.Equal(t, "attributed", status)
	assert.Equal(t, "checkout", owner)
}

func TestLocalClaims(t *testing.T) {
	h := newHarness(t, noHoldConfig())
	// Host 10.0.0.2 reports its own flow: its local side is a claim.
	h.consume(ownedFlow("10.0.0.2", "checkout", "10.0.0.9", t0.Add(-time.Minute), t0))
	assertCounter(t, h.tel, "otelcol_processor_ownership_local_claims_applied", nil, 1)
	h.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-30*time.Second), t0))
	recs := h.records()
	require.Len(t, recs, 2)
	status, _, owner := attribution(recs[1])
	assert.Equal(t, "attributed", status)
	assert.Equal(t, "checkout", owner)
	// The local owner of a flow record is left as it came.
	assert.Equal(t, "checkout", str(recs[0], flowschema.PrefixLocalOwner+"id"))
}

func TestLocalClaimsDisabled(t *testing.T) {
	cfg := noHoldConfig()
	cfg.ApplyLocalClaims = false
	h := newHarness(t, cfg)
	h.consume(ownedFlow("10.0.0.2", "checkout", "10.0.0.9", t0.Add(-time.Minute), t0))
	h.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-30*time.Second), t0))
	status, reason, _ := attribution(h.records()[1])
	assert.Equal(t, "unattributed", status)
	assert.Equal(t, "no_claim_yet", reason)
}

// A flow record's local side is counted apart from claim records: applied
// or rejected by reason when it names an owner, and as a flow without a
// local owner, which is no rejection, when it does not.
func TestLocalClaimRejections(t *testing.T) {
	h := newHarness(t, noHoldConfig())
	h.consume(
		flow("10.0.0.2", "10.0.0.9", t0.Add(-time.Minute), t0), // no local owner
		with(flow("10.0.0.2", "10.0.0.9", t0.Add(-time.Minute), t0), func(lr plog.LogRecord) {
			lr.Attributes().Remove(flowschema.AttrNetworkLocalAddress) // nor a local address
		}),
		with(ownedFlow("10.0.0.2", "checkout", "10.0.0.9", t0.Add(-time.Minute), t0), func(lr plog.LogRecord) {
			lr.Attributes().PutStr(flowschema.AttrNetworkLocalAddress, "not-an-ip")
		}),
		ownedFlow("10.0.0.2", "checkout", "10.0.0.9", t0.Add(-time.Minute), t0.Add(time.Hour)),
		ownedFlow("10.0.0.3", "cart", "10.0.0.9", t0.Add(-time.Minute), t0),
	)
	assertCounter(t, h.tel, "otelcol_processor_ownership_flows_without_local_owner", nil, 2)
	assertCounter(t, h.tel, "otelcol_processor_ownership_local_claims_rejected", map[string]string{"reason": "bad_address"}, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_local_claims_rejected", map[string]string{"reason": "end_in_future"}, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_local_claims_rejected", nil, 2)
	assertCounter(t, h.tel, "otelcol_processor_ownership_local_claims_applied", nil, 1)
	// Claim records are counted apart.
	assertCounter(t, h.tel, "otelcol_processor_ownership_claims_rejected", nil, 0)
	assertCounter(t, h.tel, "otelcol_processor_ownership_claims_applied", nil, 0)
	assert.Equal(t, 5, h.sink.LogRecordCount(), "flow records pass whatever their local side")
}

func TestConflictCounted(t *testing.T) {
	h := newHarness(t, noHoldConfig())
	h.consume(claim("10.0.0.2", "a", t0.Add(-time.Minute), t0, ""))
	h.consume(claim("10.0.0.2", "b", t0.Add(-time.Minute), t0, ""))
	assertCounter(t, h.tel, "otelcol_processor_ownership_conflicts", nil, 1)
	h.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-30*time.Second), t0))
	status, reason, owner := attribution(h.records()[0])
	assert.Equal(t, []string{"conflict", "overlapping_claims", "<absent>"}, []string{status, reason, owner})
}

// A batch's local claims are joined before the store only where the store
// would join them: a gap longer than merge_gap stays a gap.
func TestLocalClaimsJoinedWithinBatch(t *testing.T) {
	h := newHarness(t, noHoldConfig())
	h.consume(
		ownedFlow("10.0.0.2", "checkout", "10.0.0.9", t0.Add(-10*time.Minute), t0.Add(-9*time.Minute)),
		ownedFlow("10.0.0.2", "checkout", "10.0.0.9", t0.Add(-2*time.Minute), t0.Add(-time.Minute)),
		ownedFlow("10.0.0.2", "checkout", "10.0.0.9", t0.Add(-90*time.Second), t0),
		ownedFlow("10.0.0.2", "checkout", "10.0.0.9", t0.Add(-time.Second), t0.Add(time.Hour)), // in the future
	)
	assertCounter(t, h.tel, "otelcol_processor_ownership_local_claims_applied", nil, 3)
	assertCounter(t, h.tel, "otelcol_processor_ownership_local_claims_rejected", map[string]string{"reason": "end_in_future"}, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_ranges", nil, 2)

	h.consume(
		flow("10.0.0.1", "10.0.0.2", t0.Add(-5*time.Minute), t0),
		flow("10.0.0.1", "10.0.0.2", t0.Add(-30*time.Second), t0),
	)
	recs := h.records()
	_, reason, _ := attribution(recs[4])
	assert.Equal(t, "gap", reason)
	_, _, owner := attribution(recs[5])
	assert.Equal(t, "checkout", owner)
}

// A claim whose owner is beyond owner_limits is rejected before it reaches
// the store, whether it comes in a claim record or as a flow's local side:
// every flow attributed to that owner would carry its attributes.
func TestOwnersBeyondLimitsRejected(t *testing.T) {
	attrs := func(n int) []owners.Attribute {
		var out []owners.Attribute
		for i := range n {
			out = append(out, owners.Attribute{Name: strings.Repeat("a", i+1), Value: "v"})
		}
		return out
	}
	tests := []struct {
		name  string
		owner owners.Owner
	}{
		{"1 MB attribute value", owners.Owner{ID: "checkout", Attributes: []owners.Attribute{{Name: "service.name", Value: strings.Repeat("x", 1<<20)}}}},
		{"too many attributes", owners.Owner{ID: "checkout", Attributes: attrs(33)}},
		{"long ID", owners.Owner{ID: strings.Repeat("c", 257)}},
		{"long attribute name", owners.Owner{ID: "checkout", Attributes: []owners.Attribute{{Name: strings.Repeat("n", 257), Value: "v"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, noHoldConfig())
			h.consume(
				func(lr plog.LogRecord) {
					flowschema.PutClaim(lr, flowschema.Claim{Address: mustAddr("10.0.0.2"), Owner: tt.owner, Start: t0.Add(-time.Minute), End: t0})
				},
				with(flow("10.0.0.3", "10.0.0.9", t0.Add(-time.Minute), t0), func(lr plog.LogRecord) {
					flowschema.PutOwner(lr.Attributes(), flowschema.PrefixLocalOwner, tt.owner)
				}),
			)
			assertCounter(t, h.tel, "otelcol_processor_ownership_claims_rejected", map[string]string{"reason": "owner_too_large"}, 1)
			assertCounter(t, h.tel, "otelcol_processor_ownership_local_claims_rejected", map[string]string{"reason": "owner_too_large"}, 1)
			assertCounter(t, h.tel, "otelcol_processor_ownership_claims_applied", nil, 0)
			assertCounter(t, h.tel, "otelcol_processor_ownership_local_claims_applied", nil, 0)
			assertCounter(t, h.tel, "otelcol_processor_ownership_keys", nil, 0)

			h.consume(
				flow("10.0.0.1", "10.0.0.2", t0.Add(-30*time.Second), t0),
				flow("10.0.0.1", "10.0.0.3", t0.Add(-30*time.Second), t0),
			)
			recs := h.records()
			require.Len(t, recs, 3, "the flow with the oversized local owner goes on")
			for _, r := range recs[1:] {
				status, reason, owner := attribution(r)
				assert.Equal(t, []string{"unattributed", "no_claim_yet", "<absent>"}, []string{status, reason, owner})
			}
		})
	}
}

// Limits are settings: raised, they let a larger owner through.
func TestOwnerLimitsConfigurable(t *testing.T) {
	cfg := noHoldConfig()
	cfg.OwnerLimits.MaxValueLength = 2 << 20
	require.NoError(t, cfg.Validate())
	h := newHarness(t, cfg)
	big := strings.Repeat("x", 1<<20)
	h.consume(
		func(lr plog.LogRecord) {
			flowschema.PutClaim(lr, flowschema.Claim{
				Address: mustAddr("10.0.0.2"), Owner: owners.Owner{ID: "checkout", Attributes: []owners.Attribute{{Name: "service.name", Value: big}}},
				Start: t0.Add(-time.Minute), End: t0,
			})
		},
		flow("10.0.0.1", "10.0.0.2", t0.Add(-30*time.Second), t0),
	)
	recs := h.records()
	require.Len(t, recs, 1)
	_, _, owner := attribution(recs[0])
	assert.Equal(t, "checkout", owner)
	assert.Equal(t, big, str(recs[0], flowschema.PrefixPeerOwner+"service.name"))
}
