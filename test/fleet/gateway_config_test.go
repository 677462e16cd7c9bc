package fleet

import (
	"context"
	"testing"
	"time"

	"github.com/flowattr/flowattr/internal/flowschema"
)

// TestGatewayExternalPeerNotHeld: gateway.yaml's workload_cidrs are the
// private ranges, so a flow to an internet address is not held for a
// claim nobody sends: it comes out at once, external. (After the review's
// TestReviewExternalPeerIsHeld.)
func TestGatewayExternalPeerNotHeld(t *testing.T) {
	tier := startGatewayTier(t, `
processors:
  ownership:
    max_wait: 20s
  ownership/topic:
    max_wait: 20s
`, "gateway-1")
	g1 := tier.gateways[0]
	to := dialAgent(t, g1.agentAddr, tier.ca.ClientTLS(tier.ca.Issue(t, "agent-a")))
	sent := time.Now()
	must(t, to.send(context.Background(), flows(syntheticFlow{name: "to-internet", local: "10.2.0.9", localOwner: "frontend", peer: "93.184.216.34", start: sent.Add(-time.Second)})), "flow")
	r := waitForCases(t, tier.sink, 30*time.Second, "to-internet")["to-internet"]
	took := time.Since(sent)
	t.Logf("flow to an internet address: out after %s, status %q reason %q", took.Round(100*time.Millisecond), r.Str(flowschema.AttrPeerAttributionStatus), r.Str(flowschema.AttrPeerAttributionReason))
	if st, reason := r.Str(flowschema.AttrPeerAttributionStatus), r.Str(flowschema.AttrPeerAttributionReason); st != "external" || reason != "outside_workload_cidrs" {
		t.Errorf("status %q reason %q, want external, outside_workload_cidrs", st, reason)
	}
	if took >= 20*time.Second {
		t.Errorf("the flow came out after %s, max_wait: it was held", took)
	}
}
