package ebpfflowreceiver // import "github.com/flowattr/flowattr/receiver/ebpfflowreceiver"

import (
	"net/netip"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/tracer"
)

// flowState maps a tracer event kind to its flowattr.flow.state value.
func flowState(k tracer.Kind) string {
	switch k {
	case tracer.KindFailed:
		return flowschema.FlowStateFailed
	case tracer.KindActive:
		return flowschema.FlowStateActive
	}
	return flowschema.FlowStateClosed
}

// maxFlowAttrs is how many attributes putFlow writes at most, besides the
// local owner's. TestPutFlowCapacity keeps it exact.
const maxFlowAttrs = 28

// flowWriter converts events into flow records for one goroutine (the
// emitter), keeping what repeats from record to record: the local owner's
// attribute keys and the text of the local addresses, of which a node has
// few.
type flowWriter struct {
	owners     *flowschema.OwnerWriter
	workloads  *flowschema.OwnerWriter
	localAddrs map[netip.Addr]string
}

// maxCachedLocalAddrs bounds flowWriter.localAddrs: beyond it (a host with
// very many local addresses) the cache starts over.
const maxCachedLocalAddrs = 4096

func newFlowWriter() *flowWriter {
	return &flowWriter{
		owners:     flowschema.NewOwnerWriter(flowschema.PrefixLocalOwner),
		workloads:  flowschema.NewOwnerWriter(flowschema.PrefixLocalWorkload),
		localAddrs: make(map[netip.Addr]string),
	}
}

func (w *flowWriter) localAddr(a netip.Addr) string {
	if s, ok := w.localAddrs[a]; ok {
		return s
	}
	if len(w.localAddrs) >= maxCachedLocalAddrs {
		clear(w.localAddrs)
	}
	s := a.String()
	w.localAddrs[a] = s
	return s
}

// putFlow writes ev into lr as a flow record (see internal/flowschema). owner
// is the local address's owner, nil when the record names none; workload
// is the hostNetwork pod that ran the socket, nil for none; translated is
// where the kernel's address translation sent the connection, invalid when
// it was not translated or is unknown.
func (w *flowWriter) putFlow(lr plog.LogRecord, ev *tracer.Event, owner, workload *owners.Owner, translated netip.AddrPort, observed time.Time) {
	lr.SetEventName(flowschema.EventFlow)
	lr.SetTimestamp(pcommon.NewTimestampFromTime(ev.End))
	lr.SetObservedTimestamp(pcommon.NewTimestampFromTime(observed))

	attrs := lr.Attributes()
	// Room for every attribute below, so that the slice never grows: a
	// growth copies it and leaves the smaller one as garbage.
	n := maxFlowAttrs
	if owner != nil {
		n += 1 + len(owner.Attributes)
	}
	if workload != nil {
		n += 1 + len(workload.Attributes)
	}
	attrs.EnsureCapacity(n)
	local, peer := w.localAddr(ev.LocalAddr), ev.PeerAddr.String()
	attrs.PutStr(flowschema.AttrNetworkTransport, "tcp")
	if ev.LocalAddr.Is4() {
		attrs.PutStr(flowschema.AttrNetworkType, "ipv4")
	} else {
		attrs.PutStr(flowschema.AttrNetworkType, "ipv6")
	}
	attrs.PutStr(flowschema.AttrNetworkLocalAddress, local)
	attrs.PutInt(flowschema.AttrNetworkLocalPort, int64(ev.LocalPort))
	attrs.PutStr(flowschema.AttrNetworkPeerAddress, peer)
	attrs.PutInt(flowschema.AttrNetworkPeerPort, int64(ev.PeerPort))
	// Without a role there is no telling client from server; the network.*
	// attributes still carry both ends.
	switch ev.Role {
	case tracer.RoleClient:
		attrs.PutStr(flowschema.AttrFlowRole, flowschema.RoleClient)
		attrs.PutStr(flowschema.AttrClientAddress, local)
		attrs.PutInt(flowschema.AttrClientPort, int64(ev.LocalPort))
		attrs.PutStr(flowschema.AttrServerAddress, peer)
		attrs.PutInt(flowschema.AttrServerPort, int64(ev.PeerPort))
	case tracer.RoleServer:
		attrs.PutStr(flowschema.AttrFlowRole, flowschema.RoleServer)
		attrs.PutStr(flowschema.AttrClientAddress, peer)
		attrs.PutInt(flowschema.AttrClientPort, int64(ev.PeerPort))
		attrs.PutStr(flowschema.AttrServerAddress, local)
		attrs.PutInt(flowschema.AttrServerPort, int64(ev.LocalPort))
	}
	attrs.PutStr(flowschema.AttrFlowState, flowState(ev.Kind))
	attrs.PutInt(flowschema.AttrFlowStartTime, ev.Start.UnixNano())
	if !ev.StartKnown {
		attrs.PutBool(flowschema.AttrFlowStartPredatesCapture, true)
	}
	// Counters are far below 2^63; the conversions cannot wrap.
	attrs.PutInt(flowschema.AttrFlowBytesSent, int64(ev.BytesSent))
	attrs.PutInt(flowschema.AttrFlowBytesReceived, int64(ev.BytesReceived))
	attrs.PutInt(flowschema.AttrFlowSegmentsSent, int64(ev.SegmentsSent))
	attrs.PutInt(flowschema.AttrFlowSegmentsReceived, int64(ev.SegmentsReceived))
	attrs.PutInt(flowschema.AttrFlowRetransmits, int64(ev.Retransmits))
	attrs.PutInt(flowschema.AttrFlowSRTT, ev.SRTT.Microseconds())
	if ev.Err != 0 {
		name := errnoName(ev.Err)
		if name == "" {
			name = ev.Err.Error()
		}
		attrs.PutStr(flowschema.AttrFlowError, name)
	}
	if ev.PID != 0 {
		attrs.PutInt(flowschema.AttrProcessPID, int64(ev.PID))
	}
	if ev.Comm != "" {
		attrs.PutStr(flowschema.AttrProcessExecutableName, ev.Comm)
	}
	if ev.CgroupID != 0 {
		attrs.PutInt(flowschema.AttrCgroupID, int64(ev.CgroupID))
	}
	if ev.NetnsInode != 0 {
		attrs.PutInt(flowschema.AttrNetnsInode, int64(ev.NetnsInode))
	}
	if ev.Cookie != 0 {
		attrs.PutInt(flowschema.AttrFlowSocketCookie, int64(ev.Cookie))
	}
	if translated.IsValid() {
		attrs.PutStr(flowschema.AttrPeerTranslatedAddress, translated.Addr().String())
		attrs.PutInt(flowschema.AttrPeerTranslatedPort, int64(translated.Port()))
	}
	if owner != nil {
		w.owners.Put(attrs, *owner)
	}
	if workload != nil {
		w.workloads.Put(attrs, *workload)
	}
}
