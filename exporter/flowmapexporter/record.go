package flowmapexporter // import "github.com/flowattr/flowattr/exporter/flowmapexporter"

import (
	"strings"

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

// flowattrPrefix starts every attribute name the map reads but the ports.
const flowattrPrefix = "flowattr."

// parser reads flow records into flows.
type parser struct {
	nodeAttribute string // owner attribute naming a workload node ("id": the owner ID)
	groupBy       string // owner attribute grouping workload nodes, "" for none
}

// owner collects one side's owner attributes that the map needs.
type owner struct {
	id, name, group string
}

// read notes an owner attribute (name without its prefix).
func (p *parser) read(o *owner, name string, v pcommon.Value) {
	if name == owners.IDAttribute {
		o.id = v.AsString()
	}
	// Not else: node_attribute may be the ID itself.
	if name == p.nodeAttribute {
		o.name = v.AsString()
	}
	if name == p.groupBy && p.groupBy != "" {
		o.group = v.AsString()
	}
}

// endpoint returns the workload endpoint of an owner; a workload without
// node_attribute is named by its ID.
func (o *owner) endpoint(attrs pcommon.Map, prefix string) endpoint {
	name := o.name
	if name == "" {
		name = o.id
	}
	return endpoint{kind: kindWorkload, group: o.group, name: name, attrs: attrs, prefix: prefix}
}

// fields are the attributes of a flow record that the map reads.
type fields struct {
	state, role, status string
	localPort, peerPort int64
	sent, received      int64
	retransmits, srtt   int64
	hasSRTT, hasError   bool
	local, peer         owner
}

// readFlow reads one of the flowattr.flow.* attributes.
func (r *fields) readFlow(k string, v pcommon.Value) {
	switch k {
	case flowschema.AttrFlowState:
		r.state = v.Str()
	case flowschema.AttrFlowRole:
		r.role = v.Str()
	case flowschema.AttrFlowBytesSent:
		r.sent = v.Int()
	case flowschema.AttrFlowBytesReceived:
		r.received = v.Int()
	case flowschema.AttrFlowRetransmits:
		r.retransmits = v.Int()
	case flowschema.AttrFlowSRTT:
		r.srtt, r.hasSRTT = v.Int(), v.Type() == pcommon.ValueTypeInt && v.Int() >= 0
	case flowschema.AttrFlowError:
		r.hasError = true
	}
}

// parse reads lr into f when it is a closed or failed flow record.
func (p *parser) parse(lr plog.LogRecord, f *flow) outcome {
	if lr.EventName() != flowschema.EventFlow {
		return outcomeNotFlow
	}
	var r fields
	attrs := lr.Attributes()
	for k, v := range attrs.All() {
		// Most of a record's attributes are none of these: the first
		// byte, and the one after "flowattr.", rule them out before any
		// whole name is compared.
		if len(k) <= len(flowattrPrefix) {
			continue
		}
		switch k[0] {
		case 'n':
			switch k {
			case flowschema.AttrNetworkLocalPort:
				r.localPort = v.Int()
			case flowschema.AttrNetworkPeerPort:
				r.peerPort = v.Int()
			}
		case 'f':
			if k[:len(flowattrPrefix)] != flowattrPrefix {
				continue
			}
			switch k[len(flowattrPrefix)] {
			case 'f':
				r.readFlow(k, v)
			case 'l':
				if name, ok := strings.CutPrefix(k, flowschema.PrefixLocalOwner); ok {
					p.read(&r.local, name, v)
				}
			case 'p':
				switch {
				case strings.HasPrefix(k, flowschema.PrefixPeerOwner):
					p.read(&r.peer, k[len(flowschema.PrefixPeerOwner):], v)
				case k == flowschema.AttrPeerAttributionStatus:
					r.status = v.Str()
				}
			}
		}
	}
	if r.state == flowschema.FlowStateActive {
		return outcomeInterim
	}
	*f = flow{
		failed:      r.state == flowschema.FlowStateFailed || r.hasError,
		retransmits: nonNegative(r.retransmits),
		rttUS:       nonNegative(r.srtt),
		hasRTT:      r.hasSRTT,
	}

	localEnd := endpoint{kind: kindNoOwner}
	if r.local.id != "" {
		localEnd = r.local.endpoint(attrs, flowschema.PrefixLocalOwner)
	}
	var peerEnd endpoint
	switch {
	case r.status == "attributed" && r.peer.id != "":
		peerEnd = r.peer.endpoint(attrs, flowschema.PrefixPeerOwner)
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
		f.bytesToServer, f.bytesToClient = nonNegative(r.received), nonNegative(r.sent)
		f.serverPort = port(r.localPort)
	} else {
		// A client, or a side whose role is unknown: from local to peer.
		f.client, f.server = localEnd, peerEnd
		f.bytesToServer, f.bytesToClient = nonNegative(r.sent), nonNegative(r.received)
		f.serverPort = port(r.peerPort)
	}
	return outcomeMapped
}

func nonNegative(v int64) uint64 {
	if v < 0 {
		return 0
	}
	return uint64(v)
}

// port returns p as a port, 0 (unknown) when it is not one.
func port(p int64) uint16 {
	if p <= 0 || p > 65535 {
		return 0
	}
	return uint16(p)
}
