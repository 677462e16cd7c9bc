package collectortest

import (
	"net/netip"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
)

// ClientFlow is a closed TCP flow from a client's side, for tests that
// send flow records to a collector themselves rather than through the
// ebpfflow receiver.
type ClientFlow struct {
	Local, Peer netip.Addr
	LocalOwner  owners.Owner
	Start, End  time.Time
}

// PutClientFlow writes f on lr as the ebpfflow receiver would: local port
// 40000, peer port 443, timestamped at f.End.
func PutClientFlow(lr plog.LogRecord, f ClientFlow) {
	lr.SetEventName(flowschema.EventFlow)
	lr.SetTimestamp(pcommon.NewTimestampFromTime(f.End))
	attrs := lr.Attributes()
	attrs.PutStr(flowschema.AttrNetworkTransport, "tcp")
	netType := "ipv4"
	if f.Local.Is6() {
		netType = "ipv6"
	}
	attrs.PutStr(flowschema.AttrNetworkType, netType)
	attrs.PutStr(flowschema.AttrNetworkLocalAddress, f.Local.String())
	attrs.PutInt(flowschema.AttrNetworkLocalPort, 40000)
	attrs.PutStr(flowschema.AttrNetworkPeerAddress, f.Peer.String())
	attrs.PutInt(flowschema.AttrNetworkPeerPort, 443)
	attrs.PutStr(flowschema.AttrFlowRole, flowschema.RoleClient)
	attrs.PutStr(flowschema.AttrFlowState, flowschema.FlowStateClosed)
	attrs.PutInt(flowschema.AttrFlowStartTime, f.Start.UnixNano())
	flowschema.PutOwner(attrs, flowschema.PrefixLocalOwner, f.LocalOwner)
}
