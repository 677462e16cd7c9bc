package fleet

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"net"
	"net/netip"
	"os"
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

// TestGatewayServesRotatedCertificate: a Secret or CSI volume rotates the
// TLS files in place; gateway.yaml's reload_interval (shortened to 1s
// here from 1m) makes the running gateway serve the new certificate.
// (After the review's TestReviewRotatedCertificateNotServed.)
func TestGatewayServesRotatedCertificate(t *testing.T) {
	tier := startGatewayTier(t, `
receivers:
  otlp/agents:
    protocols:
      grpc:
        tls:
          reload_interval: 1s
`, "gateway-1")
	g1 := tier.gateways[0]
	client := tier.ca.ClientTLS(tier.ca.Issue(t, "agent-a"))
	served := func() []byte {
		c, err := tls.Dial("tcp", g1.agentAddr, client)
		must(t, err, "dial")
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Raw
	}
	before := served()
	// Rotate: the CA issues gateway-1 a new certificate into the same files.
	leaf := tier.ca.Issue(t, "gateway-1", net.ParseIP("127.0.0.1"))
	pemBytes, err := os.ReadFile(leaf.CertFile)
	must(t, err, "read")
	blk, _ := pem.Decode(pemBytes)
	if bytes.Equal(before, blk.Bytes) {
		t.Fatalf("the rotated certificate is the one served before")
	}
	if !eventually(10*time.Second, 200*time.Millisecond, func() bool { return bytes.Equal(served(), blk.Bytes) }) {
		t.Errorf("the gateway still serves the certificate it loaded at start 10 s after the files were rotated")
	}
}
