package flowmapexporter // import "github.com/flowattr/flowattr/exporter/flowmapexporter"

import (
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
)

// outcome is what the map does with a record: the outcome attribute of
// the records metric.
type outcome uint8

const (
	outcomeMapped outcome = iota
	outcomeInterim
	outcomeNotFlow
	outcomeOwnerTooLarge
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"mapped", "interim", "not_flow", "owner_too_large"}

// parser reads flow records into flows.
type parser struct {
	// The full names of the owner attributes the map reads, each side's
	// ID, node_attribute and group_by: comparing whole names lets the
	// length rule out most attributes before their bytes are read.
	local, peer ownerNames
	// lengths has bit n set when an owner name is n bytes long (bit 63:
	// any longer), so that most other attributes cost one test.
	lengths uint64
}

// ownerNames are one side's owner attribute names; group is "" when
// group_by is none.
type ownerNames struct{ id, name, group string }

func newParser(nodeAttribute, groupBy string) parser {
	names := func(prefix string) ownerNames {
		n := ownerNames{id: prefix + owners.IDAttribute, name: prefix + nodeAttribute}
		if groupBy != "" {
			n.group = prefix + groupBy
		}
		return n
	}
	p := parser{local: names(flowschema.PrefixLocalOwner), peer: names(flowschema.PrefixPeerOwner)}
	for _, n := range []string{p.local.id, p.local.name, p.local.group, p.peer.id, p.peer.name, p.peer.group} {
		p.lengths |= lengthBit(n)
	}
	return p
}

func lengthBit(s string) uint64 { return 1 << min(len(s), 63) }

// owner collects one side's owner attributes that the map needs.
type owner struct {
	id, name, group string
}

// read notes k if it is one of the owner attributes of names. Not else:
// node_attribute may be the ID itself, or group_by.
func (o *owner) read(names *ownerNames, k string, v pcommon.Value) {
	if k == names.id {
		o.id = v.AsString()
	}
	if k == names.name {
		o.name = v.AsString()
	}
	if k == names.group && names.group != "" {
		o.group = v.AsString()
	}
}

// endpoint returns the workload endpoint of an owner; a workload without
// node_attribute is named by its ID.
func (o *owner) endpoint(peer bool) endpoint {
	name := o.name
	if name == "" {
		name = o.id
	}
	return endpoint{kind: kindWorkload, group: o.group, name: name, peer: peer}
}

// fields are the attributes of a flow record that the map reads.
type fields struct {
	state, role, status string
	localPort, peerPort uint16
	sent, received      int64
	retransmits, srtt   int64
	hasSRTT, hasError   bool
	local, peer         owner
}

// parse reads lr into f when it is a closed or failed flow record. It
// returns, besides, how many of such a record's counts (bytes,
// retransmits, RTT) were not non-negative integers: each is read as 0, or
// no RTT.
func (p *parser) parse(lr plog.LogRecord, f *flow) (_ outcome, rejected int) {
	if lr.EventName() != flowschema.EventFlow {
		return outcomeNotFlow, 0
	}
	var r fields
	attrs := lr.Attributes()
	for k, v := range attrs.All() {
		// A switch on constant names compares lengths first; most of a
		// record's attributes match none of these.
		switch k {
		case flowschema.AttrNetworkLocalPort:
			r.localPort = flowschema.Port(v)
		case flowschema.AttrNetworkPeerPort:
			r.peerPort = flowschema.Port(v)
		case flowschema.AttrPeerAttributionStatus:
			r.status = v.Str()
		case flowschema.AttrFlowState:
			r.state = v.Str()
		case flowschema.AttrFlowRole:
			r.role = v.Str()
		case flowschema.AttrFlowBytesSent:
			r.sent = count(v, &rejected)
		case flowschema.AttrFlowBytesReceived:
			r.received = count(v, &rejected)
		case flowschema.AttrFlowRetransmits:
			r.retransmits = count(v, &rejected)
		case flowschema.AttrFlowSRTT:
			bad := rejected
			r.srtt = count(v, &rejected)
			r.hasSRTT = rejected == bad
		case flowschema.AttrFlowError:
			r.hasError = true
		default:
			if p.lengths&lengthBit(k) == 0 {
				continue
			}
			r.local.read(&p.local, k, v)
			r.peer.read(&p.peer, k, v)
		}
	}
	if r.state == flowschema.FlowStateActive {
		return outcomeInterim, 0
	}
	*f = flow{
		attrs:       attrs,
		failed:      r.state == flowschema.FlowStateFailed || r.hasError,
		retransmits: uint64(r.retransmits),
		rttUS:       uint64(r.srtt),
		hasRTT:      r.hasSRTT,
	}

	localEnd := endpoint{kind: kindNoOwner}
	if r.local.id != "" {
		localEnd = r.local.endpoint(false)
	}
	var peerEnd endpoint
	switch {
	case r.status == "attributed" && r.peer.id != "":
		peerEnd = r.peer.endpoint(true)
	case r.status == "external":
		// Outside the ownership processor's workload ranges.
		peerEnd = endpoint{kind: kindExternal}
	case r.status == "conflict":
		peerEnd = endpoint{kind: kindConflict}
	case r.status == "uncertain":
		peerEnd = endpoint{kind: kindUncertain}
	default:
		// Unattributed, or a record that no ownership processor saw.
		peerEnd = endpoint{kind: kindUnattributed}
	}

	if r.role == flowschema.RoleServer {
		f.client, f.server = peerEnd, localEnd
		f.bytesToServer, f.bytesToClient = uint64(r.received), uint64(r.sent)
		f.serverPort = r.localPort
	} else {
		// A client, or a side whose role is unknown: from local to peer.
		f.client, f.server = localEnd, peerEnd
		f.bytesToServer, f.bytesToClient = uint64(r.sent), uint64(r.received)
		f.serverPort = r.peerPort
	}
	return outcomeMapped, rejected
}

// count reads a count: a non-negative integer, else 0, counted in
// rejected.
func count(v pcommon.Value, rejected *int) int64 {
	n, ok := flowschema.Count(v)
	if !ok {
		*rejected++
	}
	return n
}
