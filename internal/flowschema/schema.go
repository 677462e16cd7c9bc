// Package flowschema defines the log records that flowattr's components
// exchange: flow records, emitted by the ebpfflow receiver and attributed by
// the ownership processor, and claim (claim) records, emitted by the
// receiver and consumed by the processor. It is the one definition both sides
// use; docs/schema.md documents it for users.
//
// Records are told apart by their LogRecord EventName. Attribute names follow
// the OpenTelemetry semantic conventions where one exists (network.*,
// client.*, server.*, process.*) and live under the flowattr.* namespace
// otherwise.
package flowschema

import "github.com/flowattr/flowattr/internal/owners"

// Event names of the two record kinds.
const (
	// EventFlow marks a flow record: one TCP connection, closed or (for
	// interim reports of long-lived connections) still open.
	EventFlow = "flowattr.flow"
	// EventClaim marks a claim record: a claim that an owner held an
	// address during a time range.
	EventClaim = "flowattr.claim"
)

// Flow record attributes taken from the semantic conventions.
const (
	AttrNetworkTransport      = "network.transport"       // always "tcp"
	AttrNetworkType           = "network.type"            // "ipv4" or "ipv6"
	AttrNetworkLocalAddress   = "network.local.address"   // canonical text form, IPv4 unmapped
	AttrNetworkLocalPort      = "network.local.port"      // int
	AttrNetworkPeerAddress    = "network.peer.address"    // canonical text form, IPv4 unmapped
	AttrNetworkPeerPort       = "network.peer.port"       // int
	AttrClientAddress         = "client.address"          // the side that sent the SYN
	AttrClientPort            = "client.port"             // int
	AttrServerAddress         = "server.address"          // the side that accepted
	AttrServerPort            = "server.port"             // int
	AttrProcessPID            = "process.pid"             // int, taken in process context
	AttrProcessExecutableName = "process.executable.name" // the task's comm
)

// Flow record attributes in the flowattr namespace.
const (
	// AttrFlowRole is RoleClient or RoleServer: which side of the connection
	// this host is.
	AttrFlowRole = "flowattr.flow.role"
	// AttrFlowState is one of the FlowState* values.
	AttrFlowState = "flowattr.flow.state"
	// AttrFlowStartTime is when the connection was born (SYN sent or
	// received), as int Unix nanoseconds. The record's Timestamp is the close
	// time, or the observation time of an interim record.
	AttrFlowStartTime = "flowattr.flow.start_time_unix_nano"
	// AttrFlowStartPredatesCapture is true when the connection was open
	// before capture started: AttrFlowStartTime is then when capture first
	// saw it (the connection was open at that time, but may be older). It is
	// absent otherwise.
	AttrFlowStartPredatesCapture = "flowattr.flow.start_predates_capture"
	// AttrFlowSocketCookie is the kernel's socket cookie, an int that links
	// the interim (active) records of one connection to its final record on
	// the same host.
	AttrFlowSocketCookie = "flowattr.flow.socket_cookie"
	// AttrFlowBytesSent and AttrFlowBytesReceived count TCP payload bytes:
	// bytes sent and acknowledged by the peer, and bytes received in order,
	// excluding the sequence numbers consumed by SYN and FIN.
	AttrFlowBytesSent     = "flowattr.flow.bytes_sent"
	AttrFlowBytesReceived = "flowattr.flow.bytes_received"
	// AttrFlowSegmentsSent and AttrFlowSegmentsReceived count TCP segments,
	// including pure ACKs and retransmissions.
	AttrFlowSegmentsSent     = "flowattr.flow.segments_sent"
	AttrFlowSegmentsReceived = "flowattr.flow.segments_received"
	// AttrFlowRetransmits counts retransmitted segments (total_retrans).
	AttrFlowRetransmits = "flowattr.flow.retransmits"
	// AttrFlowSRTT is the smoothed round-trip time in microseconds.
	AttrFlowSRTT = "flowattr.flow.srtt_us"
	// AttrFlowError is the socket error at close, as an errno name such as
	// "ECONNREFUSED"; absent when the connection closed cleanly.
	AttrFlowError = "flowattr.flow.error"
	// AttrCgroupID is the cgroup v2 ID of the process that opened or accepted
	// the connection.
	AttrCgroupID = "flowattr.process.cgroup_id"
	// AttrNetnsInode is the inode number of the connection's network namespace.
	AttrNetnsInode = "flowattr.netns.inode"
	// AttrPeerTranslatedAddress and AttrPeerTranslatedPort are where the
	// kernel's address translation (DNAT, such as a Kubernetes Service's)
	// sent a client connection to network.peer.*: the backend behind a
	// service address. Absent when the connection was not translated or
	// the receiver does not know. The semantic conventions have no
	// attribute for an address after translation: destination.* is the
	// address as observed, which network.peer.* already is.
	AttrPeerTranslatedAddress = "flowattr.peer.translated.address"
	AttrPeerTranslatedPort    = "flowattr.peer.translated.port"
)

// FlowAttributes returns the names of the attributes above, which a flow
// record carries besides its owners and attribution.
func FlowAttributes() []string {
	return []string{
		AttrNetworkTransport, AttrNetworkType,
		AttrNetworkLocalAddress, AttrNetworkLocalPort,
		AttrNetworkPeerAddress, AttrNetworkPeerPort,
		AttrClientAddress, AttrClientPort, AttrServerAddress, AttrServerPort,
		AttrProcessPID, AttrProcessExecutableName,
		AttrFlowRole, AttrFlowState, AttrFlowStartTime, AttrFlowStartPredatesCapture,
		AttrFlowSocketCookie, AttrFlowBytesSent, AttrFlowBytesReceived,
		AttrFlowSegmentsSent, AttrFlowSegmentsReceived, AttrFlowRetransmits,
		AttrFlowSRTT, AttrFlowError, AttrCgroupID, AttrNetnsInode,
		AttrPeerTranslatedAddress, AttrPeerTranslatedPort,
	}
}

// Values of AttrFlowRole.
const (
	RoleClient = "client"
	RoleServer = "server"
)

// Values of AttrFlowState.
const (
	FlowStateClosed = "closed" // the connection closed; the record is final
	FlowStateFailed = "failed" // a connect that never reached ESTABLISHED
	FlowStateActive = "active" // interim report of a connection still open
)

// Owner attribute prefixes. An owner is written as <prefix>id plus one
// attribute <prefix><name> per owner attribute, for example
// flowattr.peer.owner.id and flowattr.peer.owner.service.name.
const (
	// PrefixLocalOwner holds the owner of the flow's local address, known at
	// capture time.
	PrefixLocalOwner = "flowattr.local.owner."
	// PrefixPeerOwner holds the owner of the flow's peer address, added by
	// the ownership processor.
	PrefixPeerOwner = "flowattr.peer.owner."
	// PrefixClaimOwner holds the owner named by a claim.
	PrefixClaimOwner = "flowattr.claim.owner."
	// PrefixPeerTranslatedOwner holds the owner of the flow's translated
	// peer (AttrPeerTranslatedAddress), added by the ownership processor.
	PrefixPeerTranslatedOwner = "flowattr.peer.translated.owner."
	// PrefixLocalWorkload holds the workload that ran the flow's local
	// socket when it is not the local address's owner: a Kubernetes
	// hostNetwork pod on the node's address, found from the socket's
	// cgroup. It is never a claim.
	PrefixLocalWorkload = "flowattr.local.workload."
)

// OwnerIDSuffix completes an owner prefix into the owner's ID attribute.
const OwnerIDSuffix = owners.IDAttribute

// Attribution results written by the ownership processor on flow records.
const (
	// AttrPeerAttributionStatus is "attributed", "unattributed", "conflict",
	// "uncertain" or "external".
	AttrPeerAttributionStatus = "flowattr.peer.attribution.status"
	// AttrPeerAttributionReason says why a record is not attributed, for
	// example "no_claim_yet", "gap", "expired", "overlapping_claims",
	// "near_owner_change", "missing_key", "outside_workload_cidrs".
	AttrPeerAttributionReason = "flowattr.peer.attribution.reason"
	// AttrPeerTranslatedAttributionStatus and
	// AttrPeerTranslatedAttributionReason are the same for the translated
	// peer, on records that have one.
	AttrPeerTranslatedAttributionStatus = "flowattr.peer.translated.attribution.status"
	AttrPeerTranslatedAttributionReason = "flowattr.peer.translated.attribution.reason"
)

// Claim record attributes.
const (
	// AttrClaimAddress is the claimed address, canonical text form.
	AttrClaimAddress = "flowattr.claim.address"
	// AttrClaimStartTime and AttrClaimEndTime bound the claimed time range,
	// inclusive, as int Unix nanoseconds.
	AttrClaimStartTime = "flowattr.claim.start_time_unix_nano"
	AttrClaimEndTime   = "flowattr.claim.end_time_unix_nano"
	// AttrClaimSender names who observed the claim (the emitting host), so
	// that a receiver of claims can check the source may claim the address.
	AttrClaimSender = "flowattr.claim.sender"
)
