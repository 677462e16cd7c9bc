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
	// senderIdentityNone trusts the claim record's self-declared sender.
	senderIdentityNone = "none"
	// senderIdentityCertificate binds the sender name to the verified client
	// certificate of the gRPC connection that delivered the claim record.
	senderIdentityCertificate = "certificate"
)

// senderIdentity is what the connection that delivered a batch says about
// its sender, read once per batch.
type senderIdentity struct {
	// checked is set when claim records' senders must be named by the
	// connection's certificate: sender_identity is certificate and the
	// batch came over a gRPC connection. Batches without a gRPC peer (a
	// local receiver, a Kafka topic) are not checked: their trust boundary
	// is elsewhere.
	checked bool
	// remote is set when the batch came over a gRPC connection, from
	// another host, not from this collector's own receiver.
	remote bool
	// names are the CommonName and DNS SANs of the verified client
	// certificate; empty when the connection has none.
	names []string
}

// identify reads the sender's identity from the gRPC peer that the OTLP/gRPC
// receiver leaves in ctx.
func identify(ctx context.Context, mode string) senderIdentity {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return senderIdentity{}
	}
	if mode != senderIdentityCertificate {
		return senderIdentity{remote: true}
	}
	id := senderIdentity{checked: true, remote: true}
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
// may not claim addr, or "" when it may. A flow record names no sender: the
// records of this collector's own receiver are trusted, as its claim records
// are; those of another host are held to what its claim records would be
// under sender_identity and senders, the host being named by its
// certificate.
func (id senderIdentity) localClaimRefusal(t *addressTables, addr netip.Addr) string {
	switch {
	case !id.remote || !id.checked && t.senders == nil:
		return ""
	case !id.checked:
		// senders is set, and nothing names the sender.
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
