package ebpfflowreceiver

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/metadatatest"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/tracer"
)

// BenchmarkAddFlow measures the emitter's work per flow event: owner lookup,
// heartbeat aggregation, conversion to a record and its share of a batch
// handed to a no-op pipeline. records/s is per core with -cpu 1; the ring
// record decoding before it is internal/tracer's BenchmarkDecode.
func BenchmarkAddFlow(b *testing.B) {
	cfg := createDefaultConfig()
	clock := newManualClock(at(0))
	r, err := newFlowReceiver(metadatatest.NewSettings(componenttest.NewTelemetry()), cfg, consumertest.NewNop(), testEnvironment(nil, clock, ""))
	if err != nil {
		b.Fatal(err)
	}
	src := newMapSource("m", "10.0.0.0/16", "pool", "10.0.0.1", "web")
	r.ownership = newOwnership([]ownershipSource{src}, clock.Now)
	r.hb = newHeartbeats("n", at(0))
	r.batch = newBatch(pcommon.NewResource(), "", cfg.MaxBatchSize)
	r.flows = newFlowWriter()
	ev := tracer.Event{
		Kind: tracer.KindClosed, Role: tracer.RoleClient,
		LocalAddr: netip.MustParseAddr("10.0.3.7"), LocalPort: 40000,
		PeerAddr: netip.MustParseAddr("10.1.0.9"), PeerPort: 443,
		Start: at(1), StartKnown: true, End: at(2), BytesSent: 1000, BytesReceived: 2000,
		PID: 42, Comm: "curl", CgroupID: 7, NetnsInode: 4026531840, Cookie: 1,
	}
	ctx := context.Background()
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		r.addFlow(ctx, &ev)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}
