package fleet

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/test/internal/collectortest"
)

// TestGatewayExternalPeerNotHeld: gateway.yaml's workload_cidrs are the
// private ranges, so a flow to an internet address is not held for a
// claim nobody sends: it comes out at once, external.
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

// TestGatewayRestartReplaysTopic: a gateway that restarts under the same
// name (a restarted container of the same pod) consumes the topic in a new
// consumer group (gateway.yaml's group_id ends in a UUID read at start),
// so it reads the topic from the earliest offset and attributes a flow
// towards an address claimed before the restart. With a group that
// committed offsets it would resume after them, and the claim would be
// missing.
func TestGatewayRestartReplaysTopic(t *testing.T) {
	overlay := `
processors:
  ownership:
    max_wait: 5s
  ownership/topic:
    max_wait: 5s
`
	tier := startGatewayTier(t, overlay, "gateway-1")
	g1 := tier.gateways[0]
	ctx := context.Background()
	now := time.Now()
	checkout := netip.MustParseAddr("10.1.0.7")
	to := dialAgent(t, g1.agentAddr, tier.ca.ClientTLS(tier.ca.Issue(t, "agent-a")))
	must(t, to.send(ctx, claims(flowschema.Claim{Address: checkout, Owner: owners.Owner{ID: "checkout"}, Start: now.Add(-10 * time.Second), End: now, Sender: "agent-a"})), "claim")
	// Applied by logs/flows and logs/claims-out, then read back from the
	// topic (logs/claims-in), whose offset the receiver then commits.
	if !eventually(30*time.Second, 200*time.Millisecond, func() bool {
		return collectortest.MetricSum(g1.col.Metrics(t, g1.metricsAddr), "otelcol_processor_ownership_claims_applied") >= 3
	}) {
		t.Fatalf("claim never read back from the topic")
	}
	time.Sleep(2 * time.Second)
	g1.col.Stop(t)

	// The same name, as a restarted container of the same pod has.
	overlayFile := filepath.Join(t.TempDir(), "overlay.yaml")
	must(t, os.WriteFile(overlayFile, []byte(overlay), 0o600), "overlay")
	cert := tier.ca.Issue(t, "gateway-1", net.ParseIP("127.0.0.1"))
	health := loopbackAddr(collectortest.FreePort(t))
	metrics := loopbackAddr(collectortest.FreePort(t))
	_, metricsPort, _ := net.SplitHostPort(metrics)
	agentAddr := loopbackAddr(collectortest.FreePort(t))
	col := collectortest.Start(t, collectortest.Options{
		Name:    "gateway-1 restarted",
		Configs: []string{configPath(t, "gateway.yaml"), overlayFile},
		Env: map[string]string{
			"FLOWATTR_GATEWAY_NAME":    "gateway-1",
			"FLOWATTR_AGENT_ENDPOINT":  agentAddr,
			"FLOWATTR_KAFKA_BROKERS":   tier.kafka.ListenAddrs()[0],
			"FLOWATTR_TLS_CA":          tier.ca.File,
			"FLOWATTR_TLS_CERT":        cert.CertFile,
			"FLOWATTR_TLS_KEY":         cert.KeyFile,
			"FLOWATTR_FLOWS_ENDPOINT":  tier.sink.Addr.String(),
			"FLOWATTR_HEALTH_ENDPOINT": health,
			"FLOWATTR_METRICS_PORT":    metricsPort,
		},
	})
	col.WaitReady(t, health)
	if !eventually(30*time.Second, 200*time.Millisecond, func() bool {
		return collectortest.MetricSum(col.Metrics(t, metrics), "otelcol_processor_ownership_claims_applied") >= 1
	}) {
		t.Errorf("the restarted gateway applied no claim from the topic")
	}

	toB := dialAgent(t, agentAddr, tier.ca.ClientTLS(tier.ca.Issue(t, "agent-b")))
	must(t, toB.send(ctx, flows(syntheticFlow{name: "to-checkout", local: "10.2.0.9", localOwner: "frontend", peer: checkout.String(), start: now.Add(-5 * time.Second)})), "flow")
	r := waitForCases(t, tier.sink, 30*time.Second, "to-checkout")["to-checkout"]
	if st, id := r.Str(flowschema.AttrPeerAttributionStatus), r.Str(flowschema.PrefixPeerOwner+flowschema.OwnerIDSuffix); st != "attributed" || id != "checkout" {
		t.Errorf("after the restart: status %q owner %q (reason %q), want attributed to checkout from the replayed topic", st, id, r.Str(flowschema.AttrPeerAttributionReason))
	}
}
