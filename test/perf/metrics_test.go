//go:build linux

package perf

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/test/internal/collectortest"
)

const (
	// metricsRate is the flow records per second BenchmarkMetrics sends to
	// each pipeline.
	metricsRate = 100_000
	// metricsPeerWorkloads is how many peer workloads the benchmark's
	// flows reach; their local sides are two nodes' 16 pods each. Every
	// pair of them is a series, as a node's pods talk to a few dozen
	// services, well within max_streams.
	metricsPeerWorkloads = 50
	// metricsFailedEvery flow record of the benchmark is a failed connect.
	metricsFailedEvery = 100

	// maxStreams is delta_to_cumulative's max_streams in config/metrics.yaml.
	maxStreams = 20_000
	// streamsPerWorkload is how many streams one flow of a new local
	// workload opens: bytes transmitted and received, duration, round-trip
	// time and retransmits.
	streamsPerWorkload = 5
	// cardinalityBase and cardinalityFlood are the distinct local
	// workloads of TestMetricsCardinality's two rounds: twice what fills
	// max_streams, then ten times as many more.
	cardinalityBase  = 2 * maxStreams / streamsPerWorkload
	cardinalityFlood = 10 * cardinalityBase
	// cardinalitySlack and cardinalityRatio bound the live heap after the
	// flood against the one after the base round.
	cardinalitySlack = 16 << 20
	cardinalityRatio = 1.25
)

// BenchmarkMetrics measures what the flow metrics of config/metrics.yaml
// cost per flow record: the ownership pipeline of BenchmarkPipeline
// (pipeline-ownership.yaml), and the same with the shipped flowmetrics
// connector, delta_to_cumulative processor and prometheus exporter added
// (config/metrics.yaml with pipeline-metrics.yaml over it); in
// BenchmarkMetrics/flowmetrics+flowmap, those and the flowmap exporter
// (pipeline-metrics-flowmap.yaml over both); and in
// BenchmarkMetrics/signal_to_metrics, the same metrics made with the
// collector's signal_to_metrics connector instead
// (pipeline-signaltometrics.yaml over both). Every pipeline gets 100k
// flow records/s, in batches of 1000, from two nodes' 32 local workloads
// to 50 peer workloads, and the claims of BenchmarkPipeline. As there, the
// two collectors run side by side and are loaded in turn, 4 rounds of a 3s
// window after a 1s warm-up. Reported: records/s and the collector's
// cpu-ns/record of both, and cpu-ratio, metrics over base: the metrics'
// share is cpu-ratio - 1.
func BenchmarkMetrics(b *testing.B) {
	collectortest.Binary(b)
	for _, c := range []struct {
		name     string
		overlays []string
		// check looks at the metrics collector's own metrics after the
		// run, while it still runs.
		check func(b *testing.B, p *pipeline)
	}{
		{"flowmetrics", []string{"../../testdata/perf/pipeline-metrics.yaml"}, checkFlowmetrics},
		{"flowmetrics+flowmap", []string{"../../testdata/perf/pipeline-metrics.yaml", "../../testdata/perf/pipeline-metrics-flowmap.yaml"}, checkFlowmetrics},
		{"signal_to_metrics", []string{"../../testdata/perf/pipeline-metrics.yaml", "../../testdata/perf/pipeline-signaltometrics.yaml"}, nil},
	} {
		b.Run(c.name, func(b *testing.B) {
			base := startPipeline(b, "../../testdata/perf/pipeline-ownership.yaml")
			metrics := startPipeline(b, "../../config/metrics.yaml", c.overlays...)
			flows := metricsFlows(b)
			for _, p := range []*pipeline{base, metrics} {
				p.flows, p.rate = flows, metricsRate
			}
			for b.Loop() {
				for i := range rounds {
					if i%2 == 0 {
						base.measure(b)
						metrics.measure(b)
					} else {
						metrics.measure(b)
						base.measure(b)
					}
				}
			}
			b.StopTimer()
			if c.check != nil {
				c.check(b, metrics)
			}
			base.finish(b, true)
			metrics.finish(b, true)

			b.ReportMetric(base.perSecond(), "base-records/s")
			b.ReportMetric(metrics.perSecond(), "metrics-records/s")
			b.ReportMetric(base.cpuPerRecord(), "base-cpu-ns/record")
			b.ReportMetric(metrics.cpuPerRecord(), "metrics-cpu-ns/record")
			b.ReportMetric(metrics.cpuPerRecord()/base.cpuPerRecord(), "cpu-ratio")
			b.ReportMetric(1e9/metrics.perSecond(), "ns/op")
		})
	}
}

// checkFlowmetrics requires the connector to have counted every flow
// record the ownership processor attributed (the sink may count a batch
// twice when the exporter retries it on a loaded machine), once the last
// batch has reached it, and nothing to have been dropped on the way.
func checkFlowmetrics(b *testing.B, p *pipeline) {
	var own string
	var flows float64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		own = p.col.Metrics(b, loopback(p.col.metricsPort))
		flows = collectortest.MetricSum(own, "otelcol_processor_ownership_lookups")
		if collectortest.MetricSum(own, "otelcol_connector_flowmetrics_records") == flows || time.Now().After(deadline) {
			break
		}
	}
	if flows == 0 {
		b.Fatal("the ownership processor attributed no flow record")
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"otelcol_connector_flowmetrics_records", nil, flows},
		{"otelcol_connector_flowmetrics_records_dropped", nil, 0},
		{"otelcol_deltatocumulative_datapoints", []string{"error", "limit"}, 0},
	} {
		if n := collectortest.MetricSum(own, c.name, c.labels...); n != c.want {
			b.Fatalf("%s%v = %v, want %v", c.name, c.labels, n, c.want)
		}
	}
}

// metricsFlows encodes BenchmarkPipeline's flow batches, from two nodes
// only, with peers among the addresses of metricsPeerWorkloads workloads
// and every metricsFailedEvery-th flow a failed connect.
func metricsFlows(b *testing.B) [][]byte {
	now := time.Now()
	out := make([][]byte, flowBatches)
	for n := range out {
		ld := flowBatch(n%2, flowBatchSize, trackedAddresses, localsPerBatch, now.Add(-20*time.Second), now.Add(-time.Second))
		lrs := ld.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords()
		for i := range lrs.Len() {
			a := lrs.At(i).Attributes()
			// Address k*1000+w is owned by workload w (ownerOf).
			h := (n*flowBatchSize+i)*7919 + 13
			peer := address(h%metricsPeerWorkloads + 1000*(h/metricsPeerWorkloads%(trackedAddresses/1000))).String()
			a.PutStr(flowschema.AttrNetworkPeerAddress, peer)
			a.PutStr(flowschema.AttrServerAddress, peer)
			if i%metricsFailedEvery == 0 {
				a.PutStr(flowschema.AttrFlowState, flowschema.FlowStateFailed)
				a.PutStr(flowschema.AttrFlowError, "ECONNREFUSED")
				a.Remove(flowschema.AttrFlowSRTT)
			}
		}
		var err error
		if out[n], err = encode(ld); err != nil {
			b.Fatal(err)
		}
	}
	return out
}

// TestMetricsCardinality checks that the flow metrics' limits bound the
// collector's memory however many workloads the flows name: the built
// collector on config/metrics.yaml (pipeline-metrics.yaml over it) is sent
// flows of twice as many distinct local workloads as fill
// delta_to_cumulative's max_streams, then ten times as many more. Every
// record is counted by the flowmetrics connector or dropped beyond its
// max_series in an interval; delta_to_cumulative tracks exactly
// max_streams streams and counts every other data point as dropped at the
// limit; the Prometheus endpoint serves at most max_streams series; and the
// live heap after the flood is at most 1.25 times the one after the first
// round plus 16 MiB.
func TestMetricsCardinality(t *testing.T) {
	collectortest.Binary(t)
	if testing.Short() {
		t.Skip("SKIPPING the workload flood under -short: it sends 88k flows of distinct workloads to the built collector")
	}
	sink := startSink(t)
	col := startCollector(t, "../../config/metrics.yaml", map[string]string{
		"FLOWATTR_PERF_SINK_PORT":          strconv.Itoa(sink.port),
		"FLOWATTR_PERF_APPLY_LOCAL_CLAIMS": "false",
	}, "../../testdata/perf/pipeline-metrics.yaml")
	client := dialOTLP(t, col.otlpPort)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	round := func(from, to int) int64 {
		t.Helper()
		now := time.Now()
		for lo := from; lo < to; lo += flowBatchSize {
			req, err := encode(workloadFlood(lo, min(lo+flowBatchSize, to), now))
			if err != nil {
				t.Fatal(err)
			}
			if err := client.export(ctx, req); err != nil {
				t.Fatalf("flows of workloads %d-%d: %v", lo, to, err)
			}
		}
		// Every flow has passed the connector, counted or dropped beyond
		// max_series, and every counted one's interval has been emitted
		// (five streams each) once the numbers add up.
		deadline := time.Now().Add(time.Minute)
		var own string
		var counted, points float64
		for {
			own = col.Metrics(t, loopback(col.metricsPort))
			counted = collectortest.MetricSum(own, "otelcol_connector_flowmetrics_records")
			dropped := collectortest.MetricSum(own, "otelcol_connector_flowmetrics_records_dropped")
			points = collectortest.MetricSum(own, "otelcol_deltatocumulative_datapoints")
			if (counted+dropped == float64(to) && points == streamsPerWorkload*counted) || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, c := range []struct {
			name   string
			labels []string
			want   float64
		}{
			{"otelcol_connector_flowmetrics_records", nil, counted},
			{"otelcol_connector_flowmetrics_records_dropped", nil, float64(to) - counted},
			{"otelcol_deltatocumulative_datapoints", nil, streamsPerWorkload * counted},
			{"otelcol_deltatocumulative_datapoints", []string{"error", "limit"}, streamsPerWorkload*counted - maxStreams},
			{"otelcol_deltatocumulative_streams_tracked", nil, maxStreams},
		} {
			if got := collectortest.MetricSum(own, c.name, c.labels...); got != c.want {
				t.Errorf("after %d workloads: %s%v = %v, want %v", to, c.name, c.labels, got, c.want)
			}
		}
		exposition, err := col.Get(ctx, loopback(col.prometheusPort), "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		series := map[string]bool{}
		for _, s := range collectortest.Samples(exposition) {
			if strings.HasPrefix(s.Name, "flowattr_") {
				delete(s.Labels, "le")
				series[s.Name+fmt.Sprint(s.Labels)] = true
			}
		}
		// A histogram stream is three series (_bucket, _sum, _count).
		if n := len(series); n > 3*maxStreams {
			t.Errorf("after %d workloads the Prometheus endpoint serves %d series", to, n)
		}
		heap, err := heapAfterGC(ctx, col)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("after %d workloads (%v counted, the rest beyond max_series): live heap %d MiB, RSS %d MiB, %d series served", to, counted, heap>>20, col.memory(t).rss>>20, len(series))
		return heap
	}
	empty, err := heapAfterGC(ctx, col)
	if err != nil {
		t.Fatal(err)
	}
	base := round(0, cardinalityBase)
	t.Logf("%d streams: %.1f KiB of live heap each", maxStreams, float64(base-empty)/maxStreams/1024)
	flood := round(cardinalityBase, cardinalityBase+cardinalityFlood)
	if bound := int64(cardinalityRatio*float64(base)) + cardinalitySlack; flood > bound {
		t.Errorf("live heap after flows of %d distinct workloads is %d MiB, over %.2f x %d MiB + %d MiB: memory follows the workloads, not max_streams",
			cardinalityBase+cardinalityFlood, flood>>20, cardinalityRatio, base>>20, cardinalitySlack>>20)
	}
	col.Stop(t)
}

// workloadFlood builds closed flows of local workloads [from, to), one
// each, from 10.0.0.1 to an address outside the workload ranges (external
// at once, never held).
func workloadFlood(from, to int, end time.Time) plog.Logs {
	ld := plog.NewLogs()
	lrs := newScope(ld, "flood")
	lrs.EnsureCapacity(to - from)
	for i := from; i < to; i++ {
		lr := lrs.AppendEmpty()
		lr.SetEventName(flowschema.EventFlow)
		lr.SetTimestamp(pcommon.NewTimestampFromTime(end))
		a := lr.Attributes()
		a.PutStr(flowschema.AttrNetworkLocalAddress, "10.0.0.1")
		a.PutStr(flowschema.AttrNetworkPeerAddress, "198.51.100.7")
		a.PutInt(flowschema.AttrServerPort, 443)
		a.PutStr(flowschema.AttrFlowRole, flowschema.RoleClient)
		a.PutStr(flowschema.AttrFlowState, flowschema.FlowStateClosed)
		a.PutInt(flowschema.AttrFlowStartTime, end.Add(-time.Second).UnixNano())
		a.PutInt(flowschema.AttrFlowBytesSent, 100)
		a.PutInt(flowschema.AttrFlowBytesReceived, 200)
		a.PutInt(flowschema.AttrFlowRetransmits, 0)
		a.PutInt(flowschema.AttrFlowSRTT, 500)
		flowschema.PutOwner(a, flowschema.PrefixLocalOwner, owners.Owner{ID: fmt.Sprintf("flood-workload-%d", i)})
	}
	return ld
}
