package flowmapexporter

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"

	"github.com/flowattr/flowattr/exporter/flowmapexporter/internal/metadatatest"
	"github.com/flowattr/flowattr/internal/clock"
	"github.com/flowattr/flowattr/internal/flowschema"
)

// benchBatch is a batch of 1000 flow records as the ownership processor
// hands them on: 16 local workloads in 4 namespaces, peers spread over 400
// workloads, 1 in 20 external and 1 in 20 unattributed, every record with
// the receiver's full set of attributes.
func benchBatch(seed uint64) plog.Logs {
	rng := rand.New(rand.NewPCG(seed, 1))
	var recs []rec
	for range 1000 {
		ns := fmt.Sprint("ns", rng.IntN(4))
		r := rec{
			local:    workload(fmt.Sprint("local-", rng.IntN(16)), fmt.Sprint("svc-l", rng.IntN(16)), ns),
			peerPort: int64(8000 + rng.IntN(4)),
			sent:     int64(rng.IntN(100_000)), received: int64(rng.IntN(100_000)),
			srttUS:      int64(50 + rng.IntN(5000)),
			retransmits: int64(rng.IntN(2)),
		}
		switch rng.IntN(20) {
		case 0:
			r.status, r.reason = "external", "outside_workload_cidrs"
		case 1:
			r.status, r.reason = "unattributed", "gap"
		default:
			p := rng.IntN(400)
			r.peer = workload(fmt.Sprint("pod-", p), fmt.Sprint("svc-", p%100), fmt.Sprint("ns", p%4))
		}
		recs = append(recs, r)
	}
	ld := logsOf(recs...)
	lrs := ld.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords()
	for i := range lrs.Len() {
		a := lrs.At(i).Attributes()
		a.PutStr(flowschema.AttrNetworkType, "ipv4")
		a.PutStr(flowschema.AttrClientAddress, "10.0.0.1")
		a.PutInt(flowschema.AttrClientPort, 40000)
		a.PutStr(flowschema.AttrServerAddress, "10.0.0.2")
		a.PutInt(flowschema.AttrServerPort, 8080)
		a.PutInt(flowschema.AttrProcessPID, 4242)
		a.PutStr(flowschema.AttrProcessExecutableName, "server")
		a.PutInt(flowschema.AttrFlowStartTime, t0.UnixNano())
		a.PutInt(flowschema.AttrFlowSocketCookie, int64(i))
		a.PutInt(flowschema.AttrFlowSegmentsSent, 100)
		a.PutInt(flowschema.AttrFlowSegmentsReceived, 100)
		a.PutInt(flowschema.AttrCgroupID, 1234)
		a.PutInt(flowschema.AttrNetnsInode, 4026531840)
	}
	return ld
}

// BenchmarkConsume measures the exporter's consume path (exporterhelper,
// parsing, the map under its lock, telemetry) per flow record, in batches
// of 1000, with the map's window moving every 100 batches; b.N counts
// batches. On a shared machine absolute times drift, so each batch is also
// decoded from OTLP protobuf, as the collector's receiver does with every
// record, and map/decode is the ratio of the two in the same run.
func BenchmarkConsume(b *testing.B) {
	c := clock.NewManual(t0)
	cfg := createDefaultConfig()
	tel := componenttest.NewTelemetry()
	defer tel.Shutdown(context.Background()) //nolint:errcheck // test telemetry
	exp, err := createLogs(context.Background(), metadatatest.NewSettings(tel), cfg, c)
	if err != nil {
		b.Fatal(err)
	}
	batches := make([]plog.Logs, 16)
	encoded := make([][]byte, len(batches))
	for i := range batches {
		batches[i] = benchBatch(uint64(i))
		if encoded[i], err = plogotlp.NewExportRequestFromLogs(batches[i]).MarshalProto(); err != nil {
			b.Fatal(err)
		}
		batches[i].MarkReadOnly()
	}
	ctx := context.Background()
	n := 0
	var inMap, inDecode time.Duration
	b.ReportAllocs()
	for b.Loop() {
		i := n % len(batches)
		start := time.Now()
		req := plogotlp.NewExportRequest()
		if err := req.UnmarshalProto(encoded[i]); err != nil {
			b.Fatal(err)
		}
		decoded := time.Now()
		if err := exp.ConsumeLogs(ctx, batches[i]); err != nil {
			b.Fatal(err)
		}
		inMap += time.Since(decoded)
		inDecode += decoded.Sub(start)
		n++
		if n%100 == 0 {
			c.Advance(cfg.Window / numSlots)
		}
	}
	b.ReportMetric(float64(inMap.Nanoseconds())/float64(n*1000), "map-ns/record")
	b.ReportMetric(float64(inDecode.Nanoseconds())/float64(n*1000), "decode-ns/record")
	b.ReportMetric(float64(inMap)/float64(inDecode), "map/decode")
}

// BenchmarkSnapshot measures one /api/graph snapshot of a full default
// map: 500 workloads, 2000 edges, every slot of the window used.
func BenchmarkSnapshot(b *testing.B) {
	c := clock.NewManual(t0)
	m := newAggregate(c, 5*time.Minute, 500, 2000, createDefaultConfig().OwnerLimits)
	rng := rand.New(rand.NewPCG(1, 2))
	flows := make([]flow, 2000)
	results := make([]addResult, len(flows))
	for s := range numSlots {
		if s > 0 {
			c.Advance(30 * time.Second)
		}
		for i := range flows {
			flows[i] = flow{
				client:        endpoint{kind: kindWorkload, name: fmt.Sprint("c", i%250)},
				server:        endpoint{kind: kindWorkload, name: fmt.Sprint("s", (i/250*31+i%250+rng.IntN(2))%250)},
				attrs:         pcommon.NewMap(),
				bytesToServer: 100, hasRTT: true, rttUS: uint64(rng.IntN(10000)), serverPort: uint16(8000 + i%3),
			}
		}
		m.addBatch(flows, results)
	}
	nodes, edges := m.sizes()
	for b.Loop() {
		m.snapshot()
	}
	b.ReportMetric(float64(nodes), "nodes")
	b.ReportMetric(float64(edges), "edges")
}
