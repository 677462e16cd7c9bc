package flowmetricsconnector

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/connector/flowmetricsconnector/internal/metadatatest"
	"github.com/flowattr/flowattr/internal/clock"
	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
)

// BenchmarkConsumeLogs measures the connector's per-record cost on batches
// of 1000 flow records as the ebpfflow receiver and the ownership
// processor write them (24 attributes, owners with two attributes each),
// 16 local and 50 peer workloads in 400 pairs: ns/record is per record.
func BenchmarkConsumeLogs(b *testing.B) {
	ld := plog.NewLogs()
	rl := ld.ResourceLogs().AppendEmpty()
	rl.Resource().Attributes().PutStr("host.name", "node-a")
	lrs := rl.ScopeLogs().AppendEmpty().LogRecords()
	end := time.Unix(1_800_000_000, 0)
	owner := func(i int) owners.Owner {
		return owners.Owner{ID: fmt.Sprintf("workload-%d", i), Attributes: []owners.Attribute{
			{Name: "k8s.namespace.name", Value: fmt.Sprintf("team-%d", i%40)},
			{Name: "service.name", Value: fmt.Sprintf("service-%d", i)},
		}}
	}
	for i := range 1000 {
		lr := lrs.AppendEmpty()
		lr.SetEventName(flowschema.EventFlow)
		lr.SetTimestamp(pcommon.NewTimestampFromTime(end))
		a := lr.Attributes()
		a.PutStr(flowschema.AttrNetworkTransport, "tcp")
		a.PutStr(flowschema.AttrNetworkType, "ipv4")
		a.PutStr(flowschema.AttrNetworkLocalAddress, "10.0.0.1")
		a.PutInt(flowschema.AttrNetworkLocalPort, int64(30000+i))
		a.PutStr(flowschema.AttrNetworkPeerAddress, "10.0.1.1")
		a.PutInt(flowschema.AttrNetworkPeerPort, 8080)
		a.PutStr(flowschema.AttrFlowRole, flowschema.RoleClient)
		a.PutStr(flowschema.AttrClientAddress, "10.0.0.1")
		a.PutInt(flowschema.AttrClientPort, int64(30000+i))
		a.PutStr(flowschema.AttrServerAddress, "10.0.1.1")
		a.PutInt(flowschema.AttrServerPort, 8080)
		a.PutStr(flowschema.AttrFlowState, flowschema.FlowStateClosed)
		a.PutInt(flowschema.AttrFlowStartTime, end.Add(-time.Second).UnixNano())
		a.PutInt(flowschema.AttrFlowBytesSent, int64(1200+i))
		a.PutInt(flowschema.AttrFlowBytesReceived, int64(48000+i))
		a.PutInt(flowschema.AttrFlowSegmentsSent, 12)
		a.PutInt(flowschema.AttrFlowSegmentsReceived, 40)
		a.PutInt(flowschema.AttrFlowRetransmits, 0)
		a.PutInt(flowschema.AttrFlowSRTT, 180)
		a.PutInt(flowschema.AttrProcessPID, 4000)
		a.PutStr(flowschema.AttrProcessExecutableName, "app")
		a.PutInt(flowschema.AttrFlowSocketCookie, int64(i+1))
		flowschema.PutOwner(a, flowschema.PrefixLocalOwner, owner(i%16))
		flowschema.PutOwner(a, flowschema.PrefixPeerOwner, owner(100+i%50))
		a.PutStr(flowschema.AttrPeerAttributionStatus, "attributed")
	}
	tel := componenttest.NewTelemetry()
	defer func() { _ = tel.Shutdown(context.Background()) }()
	conn, err := NewFactoryWithClock(clock.NewManual(end)).CreateLogsToMetrics(context.Background(), metadatatest.NewSettings(tel), createDefaultConfig(), consumertest.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := conn.ConsumeLogs(ctx, ld); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*lrs.Len()), "ns/record")
}
