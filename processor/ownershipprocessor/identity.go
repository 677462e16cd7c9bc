package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"context"
	"net/netip"
	"slices"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Values of sender_identity.
const (
	// senderIdentityNone trusts the claim record's self-declared sender:
	// for the pipelines whose receivers are trusted by design.
	senderIdentityNone = "none"
	// senderIdentityCertificate binds the sender name to the verified client
	// certificate of the gRPC connection that delivered the claim record.
	senderIdentityCertificate = "certificate"
)

// senderIdentity is what the connection that delivered a batch says about
// its sender, read once per batch.
type senderIdentity struct {
	// checked is set under sender_identity certificate: every claim's
	// sender must be named by the verified client certificate of the gRPC
	// connection the batch came over. A batch with none, whatever its
	// transport (OTLP/HTTP, whose receiver leaves no certificate in the
	// context, a local receiver, Kafka), fails the check: trust is
	// configured, never inferred from a missing connection.
	checked bool
	// remote is set under sender_identity none when the batch came over a
	// gRPC connection: from another host, not from this collector's own
	// receiver.
	remote bool
	// names are the CommonName and DNS SANs of the verified client
	// certificate; empty when there is none.
	names []string
}

// identify reads the sender's identity from the gRPC peer that the OTLP/gRPC
// receiver leaves in ctx.
func identify(ctx context.Context, mode string) senderIdentity {
	p, ok := peer.FromContext(ctx)
	if mode != senderIdentityCertificate {
		return senderIdentity{remote: ok}
	}
	id := senderIdentity{checked: true}
	if !ok {
		return id
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		// Plain gRPC, or TLS without a verified client certificate.
		return id
	}
	leaf := info.State.VerifiedChains[0][0]
	if leaf.Subject.CommonName != "" {
		id.names = append(id.names, leaf.Subject.CommonName)
	}
	id.names = append(id.names, leaf.DNSNames...)
	return id
}

// mayUse reports whether the connection may send claim records under the
// sender name.
func (id senderIdentity) mayUse(sender string) bool {
	return !id.checked || (sender != "" && slices.Contains(id.names, sender))
}

// localClaimRefusal says why the local side of a flow record from the sender
// may not claim addr, or "" when it may. A flow record names no sender.
// Under sender_identity certificate it is held to what the claim records
// of the host its certificate names may claim (senders), and refused
// without one. Under none, this collector's own receiver is trusted, as its
// claim records are, while another host's records, over gRPC, can claim
// nothing when senders is set: nothing names their sender.
func (id senderIdentity) localClaimRefusal(t *addressTables, addr netip.Addr) string {
	switch {
	case !id.checked && (!id.remote || t.senders == nil):
		return ""
	case !id.checked:
		return reasonUnauthorized
	case len(id.names) == 0:
		return reasonUnauthenticated
	}
	for _, name := range id.names {
		if t.mayClaim(name, addr) {
			return ""
		}
	}
	return reasonUnauthorized
}
