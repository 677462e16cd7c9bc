package fleet

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
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

// TestGatewaySendersAsDocumented: senders as values.yaml and
// docs/kubernetes.md show them, each node its pod CIDR, the Service CIDR
// and its own address, accept the claims a node makes for a Service's
// cluster IP and for its own address, so flows to both are attributed.
// (After the review's TestReviewSendersPodCIDRRejectsServiceClaims.)
func TestGatewaySendersAsDocumented(t *testing.T) {
	senders := `
    senders:
      agent-a: [10.244.1.0/24, 10.96.0.0/12, 192.168.10.11/32]
`
	tier := startGatewayTier(t, `
processors:
  ownership:
    max_wait: 5s`+senders+`
  ownership/topic:
    max_wait: 5s`+senders+`
  ownership/claims-out:`+senders, "gateway-1")
	g1 := tier.gateways[0]
	to := dialAgent(t, g1.agentAddr, tier.ca.ClientTLS(tier.ca.Issue(t, "agent-a")))
	ctx := context.Background()
	now := time.Now()
	svc, node := netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("192.168.10.11")
	must(t, to.send(ctx, claims(
		flowschema.Claim{Address: svc, Owner: owners.Owner{ID: "svc-uid"}, Start: now.Add(-10 * time.Second), End: now, Sender: "agent-a"},
		flowschema.Claim{Address: node, Owner: owners.Owner{ID: "node-a"}, Start: now.Add(-10 * time.Second), End: now, Sender: "agent-a"},
	)), "claims")
	must(t, to.send(ctx, flows(
		syntheticFlow{name: "to-svc", local: "10.244.1.5", localOwner: "frontend", peer: svc.String(), start: now.Add(-5 * time.Second)},
		syntheticFlow{name: "to-node", local: "10.244.1.5", localOwner: "frontend", peer: node.String(), start: now.Add(-5 * time.Second)},
	)), "flows")
	got := waitForCases(t, tier.sink, 30*time.Second, "to-svc", "to-node")
	for name, want := range map[string]string{"to-svc": "svc-uid", "to-node": "node-a"} {
		r := got[name]
		if st, id := r.Str(flowschema.AttrPeerAttributionStatus), r.Str(flowschema.PrefixPeerOwner+flowschema.OwnerIDSuffix); st != "attributed" || id != want {
			t.Errorf("%s: status %q owner %q (reason %q), want attributed to %q", name, st, id, r.Str(flowschema.AttrPeerAttributionReason), want)
		}
	}
}
