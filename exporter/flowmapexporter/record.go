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

// reasonOutsideWorkload is the attribution reason of a peer outside the
// ownership processor's workload_cidrs: the map's external bucket.
const reasonOutsideWorkload = "outside_workload_cidrs"

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

// parse reads lr into f when it is a closed or failed flow record.
func (p *parser) parse(lr plog.LogRecord, f *flow) outcome {
	if lr.EventName() != flowschema.EventFlow {
		return outcomeNotFlow
	}
	var (
		state, role, status, reason string
		localPort, peerPort         int64
		sent, received              int64
		hasError                    bool
		local, peer                 owner
	)
	*f = flow{}
	attrs := lr.Attributes()
	for k, v := range attrs.All() {
		// Most of a record's attributes are none of these: tell them
		// apart by their prefix before comparing whole names.
		rest, ok := strings.CutPrefix(k, flowattrPrefix)
		if !ok {
			switch k {
			case flowschema.AttrNetworkLocalPort:
				localPort = v.Int()
			case flowschema.AttrNetworkPeerPort:
				peerPort = v.Int()
			}
			continue
		}
		switch {
		case strings.HasPrefix(rest, "flow."):
			switch k {
			case flowschema.AttrFlowState:
				state = v.Str()
			case flowschema.AttrFlowRole:
				role = v.Str()
			case flowschema.AttrFlowBytesSent:
				sent = v.Int()
			case flowschema.AttrFlowBytesReceived:
				received = v.Int()
			case flowschema.AttrFlowRetransmits:
				f.retransmits = nonNegative(v.Int())
			case flowschema.AttrFlowSRTT:
				if v.Type() == pcommon.ValueTypeInt && v.Int() >= 0 {
					f.rttUS, f.hasRTT = uint64(v.Int()), true
				}
			case flowschema.AttrFlowError:
				hasError = true
			}
		case strings.HasPrefix(k, flowschema.PrefixLocalOwner):
			p.read(&local, k[len(flowschema.PrefixLocalOwner):], v)
		case strings.HasPrefix(k, flowschema.PrefixPeerOwner):
			p.read(&peer, k[len(flowschema.PrefixPeerOwner):], v)
		case k == flowschema.AttrPeerAttributionStatus:
			status = v.Str()
		case k == flowschema.AttrPeerAttributionReason:
			reason = v.Str()
		}
	}
	if state == flowschema.FlowStateActive {
		return outcomeInterim
	}
	f.failed = state == flowschema.FlowStateFailed || hasError

	localEnd := endpoint{kind: kindNoOwner}
	if local.id != "" {
		localEnd = local.endpoint(attrs, flowschema.PrefixLocalOwner)
	}
	var peerEnd endpoint
	switch {
	case status == "attributed" && peer.id != "":
		peerEnd = peer.endpoint(attrs, flowschema.PrefixPeerOwner)
	case status == "unattributed" && reason == reasonOutsideWorkload:
		peerEnd = endpoint{kind: kindExternal}
	case status == "conflict":
		peerEnd = endpoint{kind: kindConflict}
	case status == "uncertain":
		peerEnd = endpoint{kind: kindUncertain}
	default:
		// Unattributed, or a record that no ownership processor saw.
		peerEnd = endpoint{kind: kindUnattributed}
	}

	if role == flowschema.RoleServer {
		f.client, f.server = peerEnd, localEnd
		f.bytesToServer, f.bytesToClient = nonNegative(received), nonNegative(sent)
		f.serverPort = port(localPort)
	} else {
		// A client, or a side whose role is unknown: from local to peer.
		f.client, f.server = localEnd, peerEnd
		f.bytesToServer, f.bytesToClient = nonNegative(sent), nonNegative(received)
		f.serverPort = port(peerPort)
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
