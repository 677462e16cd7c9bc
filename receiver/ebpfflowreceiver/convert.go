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

// flowAttr is one attribute of a flow record before it is written: its key
// and its value, a string or an int (a bool when kind says so).
type flowAttr struct {
	key  string
	kind pcommon.ValueType
	str  string
	num  int64
}

// flowWriter converts events into flow records for one goroutine (the
// emitter), keeping what repeats from record to record: the local owner's
// attribute keys, the text of the local addresses, of which a node has
// few, and a template of each set of attribute keys that records have.
type flowWriter struct {
	owners     *flowschema.OwnerWriter
	workloads  *flowschema.OwnerWriter
	localAddrs map[netip.Addr]string
	// templates holds, by shape (see putFlow), a map with the attribute
	// keys of records of that shape in the order putFlow writes them.
	// Copying it into a record writes every key without looking for it
	// first, as a Put does at every key.
	templates map[uint32]pcommon.Map
}

// maxCachedLocalAddrs bounds flowWriter.localAddrs: beyond it (a host with
// very many local addresses) the cache starts over.
const maxCachedLocalAddrs = 4096

func newFlowWriter() *flowWriter {
	return &flowWriter{
		owners:     flowschema.NewOwnerWriter(flowschema.PrefixLocalOwner),
		workloads:  flowschema.NewOwnerWriter(flowschema.PrefixLocalWorkload),
		localAddrs: make(map[netip.Addr]string),
		templates:  make(map[uint32]pcommon.Map),
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

// flowAttrs are the attributes of the record being written, on the stack:
// writing them there costs no write barriers while the GC runs.
type flowAttrs struct {
	a [maxFlowAttrs]flowAttr
	n int
}

func (f *flowAttrs) str(key, v string) {
	f.a[f.n] = flowAttr{key: key, kind: pcommon.ValueTypeStr, str: v}
	f.n++
}

func (f *flowAttrs) int(key string, v int64) {
	f.a[f.n] = flowAttr{key: key, kind: pcommon.ValueTypeInt, num: v}
	f.n++
}

func (f *flowAttrs) bool(key string) {
	f.a[f.n] = flowAttr{key: key, kind: pcommon.ValueTypeBool, num: 1}
	f.n++
}

// Bits of a record's shape beyond its role (the two lowest): which
// optional attributes it has.
const (
	shapePredatesCapture uint32 = 1 << (iota + 2)
	shapeError
	shapePID
	shapeComm
	shapeCgroup
	shapeNetns
	shapeCookie
	shapeTranslated
)

// putFlow writes ev into lr as a flow record (see internal/flowschema). owner
// is the local address's owner, nil when the record names none; workload
// is the hostNetwork pod that ran the socket, nil for none; translated is
// where the kernel's address translation sent the connection, invalid when
// it was not translated or is unknown.
func (w *flowWriter) putFlow(lr plog.LogRecord, ev *tracer.Event, owner, workload *owners.Owner, translated netip.AddrPort, observed time.Time) {
	lr.SetEventName(flowschema.EventFlow)
	lr.SetTimestamp(pcommon.NewTimestampFromTime(ev.End))
	lr.SetObservedTimestamp(pcommon.NewTimestampFromTime(observed))

	// The attributes in the order they are written; which of them a
	// record has is its shape, and records of one shape have the same
	// keys in the same order.
	var f flowAttrs
	shape := uint32(ev.Role) & 3
	local, peer := w.localAddr(ev.LocalAddr), ev.PeerAddr.String()
	f.str(flowschema.AttrNetworkTransport, "tcp")
	if ev.LocalAddr.Is4() {
		f.str(flowschema.AttrNetworkType, "ipv4")
	} else {
		f.str(flowschema.AttrNetworkType, "ipv6")
	}
	f.str(flowschema.AttrNetworkLocalAddress, local)
	f.int(flowschema.AttrNetworkLocalPort, int64(ev.LocalPort))
	f.str(flowschema.AttrNetworkPeerAddress, peer)
	f.int(flowschema.AttrNetworkPeerPort, int64(ev.PeerPort))
	// Without a role there is no telling client from server; the network.*
	// attributes still carry both ends.
	switch ev.Role {
	case tracer.RoleClient:
		f.str(flowschema.AttrFlowRole, flowschema.RoleClient)
		f.str(flowschema.AttrClientAddress, local)
		f.int(flowschema.AttrClientPort, int64(ev.LocalPort))
		f.str(flowschema.AttrServerAddress, peer)
		f.int(flowschema.AttrServerPort, int64(ev.PeerPort))
	case tracer.RoleServer:
		f.str(flowschema.AttrFlowRole, flowschema.RoleServer)
		f.str(flowschema.AttrClientAddress, peer)
		f.int(flowschema.AttrClientPort, int64(ev.PeerPort))
		f.str(flowschema.AttrServerAddress, local)
		f.int(flowschema.AttrServerPort, int64(ev.LocalPort))
	}
	f.str(flowschema.AttrFlowState, flowState(ev.Kind))
	f.int(flowschema.AttrFlowStartTime, ev.Start.UnixNano())
	if !ev.StartKnown {
		shape |= shapePredatesCapture
		f.bool(flowschema.AttrFlowStartPredatesCapture)
	}
	// Counters are far below 2^63; the conversions cannot wrap.
	f.int(flowschema.AttrFlowBytesSent, int64(ev.BytesSent))
	f.int(flowschema.AttrFlowBytesReceived, int64(ev.BytesReceived))
	f.int(flowschema.AttrFlowSegmentsSent, int64(ev.SegmentsSent))
	f.int(flowschema.AttrFlowSegmentsReceived, int64(ev.SegmentsReceived))
	f.int(flowschema.AttrFlowRetransmits, int64(ev.Retransmits))
	f.int(flowschema.AttrFlowSRTT, ev.SRTT.Microseconds())
	if ev.Err != 0 {
		shape |= shapeError
		name := errnoName(ev.Err)
		if name == "" {
			name = ev.Err.Error()
		}
		f.str(flowschema.AttrFlowError, name)
	}
	if ev.PID != 0 {
		shape |= shapePID
		f.int(flowschema.AttrProcessPID, int64(ev.PID))
	}
	if ev.Comm != "" {
		shape |= shapeComm
		f.str(flowschema.AttrProcessExecutableName, ev.Comm)
	}
	if ev.CgroupID != 0 {
		shape |= shapeCgroup
		f.int(flowschema.AttrCgroupID, int64(ev.CgroupID))
	}
	if ev.NetnsInode != 0 {
		shape |= shapeNetns
		f.int(flowschema.AttrNetnsInode, int64(ev.NetnsInode))
	}
	if ev.Cookie != 0 {
		shape |= shapeCookie
		f.int(flowschema.AttrFlowSocketCookie, int64(ev.Cookie))
	}
	if translated.IsValid() {
		shape |= shapeTranslated
		f.str(flowschema.AttrPeerTranslatedAddress, translated.Addr().String())
		f.int(flowschema.AttrPeerTranslatedPort, int64(translated.Port()))
	}

	attrs := lr.Attributes()
	// Room for every attribute, so that the slice never grows: a growth
	// copies it and leaves the smaller one as garbage.
	n := f.n
	if owner != nil {
		n += 1 + len(owner.Attributes)
	}
	if workload != nil {
		n += 1 + len(workload.Attributes)
	}
	attrs.EnsureCapacity(n)
	w.template(shape, f.a[:f.n]).CopyTo(attrs)
	i := 0
	for _, v := range attrs.All() {
		switch a := &f.a[i]; a.kind {
		case pcommon.ValueTypeStr:
			v.SetStr(a.str)
		case pcommon.ValueTypeBool:
			v.SetBool(a.num != 0)
		default:
			v.SetInt(a.num)
		}
		i++
	}
	if owner != nil {
		w.owners.Put(attrs, *owner)
	}
	if workload != nil {
		w.workloads.Put(attrs, *workload)
	}
}

// template returns the template of shape, made from the keys of attrs, a
// record of that shape, if there is none yet.
func (w *flowWriter) template(shape uint32, attrs []flowAttr) pcommon.Map {
	if t, ok := w.templates[shape]; ok {
		return t
	}
	t := pcommon.NewMap()
	t.EnsureCapacity(len(attrs))
	for _, a := range attrs {
		switch a.kind {
		case pcommon.ValueTypeStr:
			t.PutStr(a.key, "")
		case pcommon.ValueTypeBool:
			t.PutBool(a.key, false)
		default:
			t.PutInt(a.key, 0)
		}
	}
	w.templates[shape] = t
	return t
}
