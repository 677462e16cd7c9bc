package fleet

import (
	"context"
	"crypto/tls"
	"net/netip"
	"testing"
	"time"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/test/internal/collectortest"
	"github.com/flowattr/flowattr/test/internal/testca"
)

// sourcesOverlay restricts the ownership processors of gateway.yaml to the
// same source table, and binds each source name to the agent's client
// certificate, so a rejected claim is neither applied nor published.
// ownership/topic shares ownership's store, so it sets the same.
const sourcesOverlay = `
processors:
  ownership:
    max_wait: 2s
    sender_identity: certificate
    senders: &sources
      agent-a: [10.1.0.0/24]
      agent-b: [10.2.0.0/24]
      rogue: [10.9.0.0/24]
  ownership/topic:
    max_wait: 2s
    senders: *sources
  ownership/claims-out:
    sender_identity: certificate
    senders: *sources
`

// TestRoguePeerCannotStealAddress checks the three defences of the claim
// path: mutual TLS keeps out senders without a fleet certificate,
// sender_identity keeps a peer with a valid certificate from claiming under
// a source name its certificate does not carry, and the sources table keeps
// it from claiming an address outside its own CIDRs.
func TestRoguePeerCannotStealAddress(t *testing.T) {
	tier := startGatewayTier(t, sourcesOverlay, "gateway-1")
	g := tier.gateways[0]
	ctx := context.Background()
	agentA := dialAgent(t, g.agentAddr, tier.ca.ClientTLS(tier.ca.Issue(t, "agent-a")))
	agentB := dialAgent(t, g.agentAddr, tier.ca.ClientTLS(tier.ca.Issue(t, "agent-b")))
	rogue := dialAgent(t, g.agentAddr, tier.ca.ClientTLS(tier.ca.Issue(t, "rogue")))

	now := time.Now()
	checkout, spare, payments := netip.MustParseAddr("10.1.0.7"), netip.MustParseAddr("10.1.0.8"), netip.MustParseAddr("10.1.0.9")
	rogueOwn := netip.MustParseAddr("10.9.0.5")
	evil := owners.Owner{ID: "evil"}

	// The gateway refuses senders without a certificate from the fleet's
	// CA: one from another CA, and none at all. Both trust the gateway.
	otherCA := testca.New(t, "not-the-fleet")
	for name, cfg := range map[string]*tls.Config{
		"certificate from another CA": tier.ca.ClientTLS(otherCA.Issue(t, "stranger")),
		"no certificate":              tier.ca.ClientTLS(testca.Leaf{}),
	} {
		c := dialAgent(t, g.agentAddr, cfg)
		if err := c.send(ctx, claims(flowschema.Claim{Address: checkout, Owner: evil, Start: now.Add(-20 * time.Second), End: now, Sender: "agent-a"})); err == nil {
			t.Fatalf("a sender with %s could send claims", name)
		}
	}

	must(t, agentA.send(ctx, claims(
		flowschema.Claim{Address: checkout, Owner: owners.Owner{ID: "checkout"}, Start: now.Add(-20 * time.Second), End: now, Sender: "agent-a"},
		flowschema.Claim{Address: payments, Owner: owners.Owner{ID: "payments"}, Start: now.Add(-20 * time.Second), End: now, Sender: "agent-a"},
	)), "agent-a claims")
	must(t, rogue.send(ctx, claims(
		// Under its own name, outside its CIDRs: rejected.
		flowschema.Claim{Address: checkout, Owner: evil, Start: now.Add(-20 * time.Second), End: now, Sender: "rogue"},
		flowschema.Claim{Address: spare, Owner: evil, Start: now.Add(-20 * time.Second), End: now, Sender: "rogue"},
		// Under a name its certificate does not carry: rejected.
		flowschema.Claim{Address: spare, Owner: evil, Start: now.Add(-20 * time.Second), End: now, Sender: "mallory"},
		// Impersonating agent-a within agent-a's CIDRs: the sources table
		// would accept it, its certificate does not.
		flowschema.Claim{Address: payments, Owner: evil, Start: now.Add(-20 * time.Second), End: now, Sender: "agent-a"},
		flowschema.Claim{Address: spare, Owner: evil, Start: now.Add(-20 * time.Second), End: now, Sender: "agent-a"},
		// Its own address under its own name: accepted.
		flowschema.Claim{Address: rogueOwn, Owner: owners.Owner{ID: "rogue-svc"}, Start: now.Add(-20 * time.Second), End: now, Sender: "rogue"},
	)), "rogue claims")

	start := now.Add(-10 * time.Second)
	must(t, agentB.send(ctx, flows(
		syntheticFlow{name: "to-checkout", local: "10.2.0.9", localOwner: "frontend", peer: checkout.String(), start: start},
		syntheticFlow{name: "to-spare", local: "10.2.0.9", localOwner: "frontend", peer: spare.String(), start: start},
		syntheticFlow{name: "to-payments", local: "10.2.0.9", localOwner: "frontend", peer: payments.String(), start: start},
		syntheticFlow{name: "to-rogue", local: "10.2.0.9", localOwner: "frontend", peer: rogueOwn.String(), start: start},
	)), "agent-b flows")

	got := waitForCases(t, tier.sink, 30*time.Second, "to-checkout", "to-spare", "to-payments", "to-rogue")
	for name, want := range map[string]struct{ status, owner string }{
		"to-checkout": {"attributed", "checkout"},
		"to-spare":    {"unattributed", ""},
		"to-payments": {"attributed", "payments"},
		"to-rogue":    {"attributed", "rogue-svc"},
	} {
		r := got[name]
		st, id := r.Str(flowschema.AttrPeerAttributionStatus), r.Str(flowschema.PrefixPeerOwner+flowschema.OwnerIDSuffix)
		if id == "evil" {
			t.Errorf("%s: attributed to the rogue's owner", name)
		}
		if st != want.status || id != want.owner {
			t.Errorf("%s: status %q owner %q (reason %q), want %q %q", name, st, id, r.Str(flowschema.AttrPeerAttributionReason), want.status, want.owner)
		}
	}

	m := g.col.Metrics(t, g.metricsAddr)
	// Each rejected claim is rejected by both processors that see the
	// agents' stream (logs/flows and logs/claims-out); none came back
	// from the topic.
	if n := collectortest.MetricSum(m, "otelcol_processor_ownership_claims_rejected", "reason", "unauthorized_sender"); n != 4 {
		t.Errorf("%v claims rejected as unauthorized_sender, want 4 (2 claims x 2 pipelines)", n)
	}
	if n := collectortest.MetricSum(m, "otelcol_processor_ownership_claims_rejected", "reason", "unauthenticated_sender"); n != 6 {
		t.Errorf("%v claims rejected as unauthenticated_sender, want 6 (3 claims x 2 pipelines)", n)
	}
	for _, r := range topicRecords(t, tier.kafka.ListenAddrs()) {
		if r.Str(flowschema.PrefixClaimOwner+flowschema.OwnerIDSuffix) == "evil" {
			t.Errorf("a rejected claim reached the claim topic: %v", r.Attrs)
		}
	}
}
