package ownershipprocessor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// grpcPeer returns a context as the OTLP/gRPC receiver passes it on: the
// connection's peer, with the client certificate chain the TLS handshake
// verified (none when cert is nil), or plain gRPC when tlsOn is false.
func grpcPeer(cert *x509.Certificate, tlsOn bool) context.Context {
	p := &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 9), Port: 40000}}
	if tlsOn {
		var st tls.ConnectionState
		if cert != nil {
			st.PeerCertificates = []*x509.Certificate{cert}
			st.VerifiedChains = [][]*x509.Certificate{{cert}}
		}
		p.AuthInfo = credentials.TLSInfo{State: st}
	}
	return peer.NewContext(context.Background(), p)
}

func clientCert(cn string, dns ...string) *x509.Certificate {
	return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, DNSNames: dns}
}

func TestSourceIdentityCertificate(t *testing.T) {
	tests := []struct {
		name    string
		mode    string
		ctx     context.Context
		source  string
		applied bool
	}{
		{"certificate CommonName is the source", senderIdentityCertificate, grpcPeer(clientCert("node-a"), true), "node-a", true},
		{"certificate DNS SAN is the source", senderIdentityCertificate, grpcPeer(clientCert("host-17", "node-a"), true), "node-a", true},
		{"certificate names another source", senderIdentityCertificate, grpcPeer(clientCert("node-b", "node-b"), true), "node-a", false},
		{"no source", senderIdentityCertificate, grpcPeer(clientCert("node-a"), true), "", false},
		{"TLS without a verified client certificate", senderIdentityCertificate, grpcPeer(nil, true), "node-a", false},
		{"plain gRPC", senderIdentityCertificate, grpcPeer(nil, false), "node-a", false},
		// OTLP/HTTP (its receiver leaves no certificate in the context),
		// a local receiver, a Kafka topic: nothing verifies the sender.
		{"no gRPC peer", senderIdentityCertificate, context.Background(), "node-a", false},
		{"off, no gRPC peer", senderIdentityNone, context.Background(), "node-a", true},
		{"off", senderIdentityNone, grpcPeer(clientCert("node-b"), true), "node-a", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := noHoldConfig()
			cfg.SenderIdentity = tt.mode
			require.NoError(t, cfg.Validate())
			h := newHarness(t, cfg)
			require.NoError(t, h.proc.ConsumeLogs(tt.ctx, logsOf(claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, tt.source))))

			var applied, rejected int64 = 0, 1
			wantOwner := "<absent>"
			if tt.applied {
				applied, rejected, wantOwner = 1, 0, "checkout"
			}
			assertCounter(t, h.tel, "otelcol_processor_ownership_claims_rejected",
				map[string]string{"reason": "unauthenticated_sender"}, rejected)
			assertCounter(t, h.tel, "otelcol_processor_ownership_claims_applied", nil, applied)
			h.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-30*time.Second), t0))
			_, _, owner := attribution(h.records()[0])
			assert.Equal(t, wantOwner, owner)
		})
	}
}

// A peer with a valid certificate for node-a cannot claim under node-b's
// name inside node-b's CIDRs, while its own claims are accepted.
func TestSourceIdentityStopsImpersonation(t *testing.T) {
	cfg := noHoldConfig()
	cfg.SenderIdentity = senderIdentityCertificate
	cfg.Senders = map[string][]string{"node-a": {"10.0.0.0/24"}, "node-b": {"10.0.1.0/24"}}
	h := newHarness(t, cfg)
	nodeA := grpcPeer(clientCert("node-a", "node-a"), true)
	require.NoError(t, h.proc.ConsumeLogs(nodeA, logsOf(
		claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, "node-a"),
		claim("10.0.1.2", "evil", t0.Add(-time.Minute), t0, "node-b"),
	)))
	assertCounter(t, h.tel, "otelcol_processor_ownership_claims_rejected",
		map[string]string{"reason": "unauthenticated_sender"}, 1)
	assertCounter(t, h.tel, "otelcol_processor_ownership_claims_applied", nil, 1)

	h.consume(
		flow("10.0.0.9", "10.0.0.2", t0.Add(-30*time.Second), t0),
		flow("10.0.0.9", "10.0.1.2", t0.Add(-30*time.Second), t0),
	)
	recs := h.records()
	require.Len(t, recs, 2)
	_, _, owner := attribution(recs[0])
	assert.Equal(t, "checkout", owner)
	status, _, owner := attribution(recs[1])
	assert.Equal(t, "unattributed", status)
	assert.Equal(t, "<absent>", owner)
}

// The local side of a flow record from another host claims for the host its
// certificate names: with no sources configured, any authenticated host
// may claim.
func TestSourceIdentityLeavesLocalClaims(t *testing.T) {
	cfg := noHoldConfig()
	cfg.SenderIdentity = senderIdentityCertificate
	h := newHarness(t, cfg)
	require.NoError(t, h.proc.ConsumeLogs(grpcPeer(clientCert("node-a"), true),
		logsOf(ownedFlow("10.0.0.2", "checkout", "10.0.0.9", t0.Add(-time.Minute), t0))))
	h.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-30*time.Second), t0))
	recs := h.records()
	require.Len(t, recs, 2)
	_, _, owner := attribution(recs[1])
	assert.Equal(t, "checkout", owner)
}

// The local side of a flow record is a claim, held to what the sending
// host's claims may claim: a flow record from another host cannot claim
// an address its claims could not; this collector's own records claim as
// its claims do where the processor trusts its pipeline (sender_identity
// none), and are refused where it checks certificates.
func TestLocalClaimsFromOtherHostsFollowSources(t *testing.T) {
	sources := map[string][]string{"node-a": {"10.0.1.0/24"}, "node-b": {"10.0.2.0/24"}}
	tests := []struct {
		name   string
		mode   string
		ctx    context.Context
		local  string
		reason string // the local claim's rejection, or "" if applied
	}{
		{"own receiver", senderIdentityNone, context.Background(), "10.0.2.5", ""},
		// Trust is configured (sender_identity none), not inferred from
		// the missing connection.
		{"no connection, certificate mode", senderIdentityCertificate, context.Background(), "10.0.2.5", "unauthenticated_sender"},
		{"other host, nothing names it", senderIdentityNone, grpcPeer(nil, false), "10.0.2.5", "unauthorized_sender"},
		{"other host, certificate for its own CIDR", senderIdentityCertificate, grpcPeer(clientCert("node-a"), true), "10.0.1.5", ""},
		{"other host, certificate for another's CIDR", senderIdentityCertificate, grpcPeer(clientCert("node-a"), true), "10.0.2.5", "unauthorized_sender"},
		{"other host, no certificate", senderIdentityCertificate, grpcPeer(nil, true), "10.0.1.5", "unauthenticated_sender"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := noHoldConfig()
			cfg.SenderIdentity = tt.mode
			cfg.Senders = sources
			h := newHarness(t, cfg)
			require.NoError(t, h.proc.ConsumeLogs(tt.ctx,
				logsOf(ownedFlow(tt.local, "evil", "10.0.1.1", t0.Add(-time.Minute), t0))))
			h.consume(flow("10.0.1.1", tt.local, t0.Add(-30*time.Second), t0))
			recs := h.records()
			require.Len(t, recs, 2)
			_, _, owner := attribution(recs[1])
			if tt.reason == "" {
				assert.Equal(t, "evil", owner)
				return
			}
			assert.Equal(t, "<absent>", owner)
			assertCounter(t, h.tel, "otelcol_processor_ownership_local_claims_rejected",
				map[string]string{"reason": tt.reason}, 1)
		})
	}
}
