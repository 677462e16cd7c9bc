//go:build linux

package perf

import (
	"bytes"
	"compress/gzip"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/plog"
)

// BenchmarkWireSize measures the heartbeat's bytes on the wire beside a flow
// record's: a batch of 1000 claim records as BenchmarkPipeline's claim stream
// sends them (an address, an owner of two attributes, a sender each) and a
// batch of 1000 flow records as the ebpfflow receiver writes them, each
// encoded as an OTLP ExportLogsServiceRequest, as is and compressed with
// gzip at its default level, as the otlp_grpc exporter sends it by default.
// ns/op is encoding and compressing both batches.
func BenchmarkWireSize(b *testing.B) {
	const batchSize, tracked, locals = 1000, 100_000, 16
	start := time.Unix(1_700_000_000, 0)
	end := start.Add(10 * time.Second)
	batches := []plog.Logs{
		claimBatch(0, batchSize, 0, start, end),
		flowBatch(0, batchSize, tracked, locals, start, end),
	}
	var raw, compressed [2]int
	var buf bytes.Buffer
	for b.Loop() {
		for i, ld := range batches {
			req, err := encode(ld)
			if err != nil {
				b.Fatal(err)
			}
			buf.Reset()
			zw := gzip.NewWriter(&buf)
			if _, err := zw.Write(req); err != nil {
				b.Fatal(err)
			}
			if err := zw.Close(); err != nil {
				b.Fatal(err)
			}
			raw[i], compressed[i] = len(req), buf.Len()
		}
	}
	b.ReportMetric(float64(raw[0])/batchSize, "B/claim")
	b.ReportMetric(float64(compressed[0])/batchSize, "gzip-B/claim")
	b.ReportMetric(float64(raw[1])/batchSize, "B/flow")
	b.ReportMetric(float64(compressed[1])/batchSize, "gzip-B/flow")
}
