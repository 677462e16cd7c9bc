//go:build linux

package perf

import (
	"testing"

	"github.com/flowattr/flowattr/test/internal/collectortest"
)

// BenchmarkPipelineFlowmap measures what the flowmap exporter costs in the
// built collector: the ownership pipeline of BenchmarkPipeline against the
// same pipeline with the flowmap exporter beside its OTLP exporter, loaded
// in alternating windows as BenchmarkPipeline does. The flows' peers are
// spread over 1000 workloads in 40 namespaces, so the default map (500
// workloads, 2000 edges) is full and folds the rest into its other bucket,
// as a large cluster would. Reported: records/s and cpu-ns/record of both,
// and the ratios flowmap/ownership; the map's share of the collector's CPU
// per record is cpu-ratio - 1.
func BenchmarkPipelineFlowmap(b *testing.B) {
	collectortest.Binary(b)
	base := startPipeline(b, "../../testdata/perf/pipeline-ownership.yaml")
	withMap := startPipeline(b, "../../testdata/perf/pipeline-flowmap.yaml")
	for b.Loop() {
		for i := range rounds {
			if i%2 == 0 {
				base.measure(b)
				withMap.measure(b)
			} else {
				withMap.measure(b)
				base.measure(b)
			}
		}
	}
	b.StopTimer()
	base.finish(b, true)
	withMap.finish(b, true)

	b.ReportMetric(base.perSecond(), "ownership-records/s")
	b.ReportMetric(withMap.perSecond(), "flowmap-records/s")
	b.ReportMetric(withMap.perSecond()/base.perSecond(), "throughput-ratio")
	b.ReportMetric(base.cpuPerRecord(), "ownership-cpu-ns/record")
	b.ReportMetric(withMap.cpuPerRecord(), "flowmap-cpu-ns/record")
	b.ReportMetric(withMap.cpuPerRecord()/base.cpuPerRecord(), "cpu-ratio")
	b.ReportMetric(1e9/withMap.perSecond(), "ns/op")
}
