//go:build linux

package perf

import (
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"

	"github.com/flowattr/flowattr/internal/flowschema"
)

// BenchmarkAttributionOutput measures what any processor that attributes a
// flow record pays for its output alone, whatever its lookup costs: writing
// the attributes the ownership processor adds to an attributed record (the
// peer owner's ID, its two attributes, the status) and the exporter
// encoding them. Per iteration it decodes a batch of 1000 flow records as
// BenchmarkPipeline sends them (as the collector's receiver does) twice,
// writes the attribution onto one and encodes both, timing each step. write-ns/record and the difference of
// attributed-encode-ns/record and encode-ns/record are the lower bound of
// the ownership pipeline's extra CPU per record in BenchmarkPipeline;
// extra/passthrough reads them against decoding and encoding the plain
// batch, most of what the stock pipeline spends per record.
func BenchmarkAttributionOutput(b *testing.B) {
	const batchSize, tracked, locals = 1000, 100_000, 16
	start := time.Unix(1_700_000_000, 0)
	plain := flowBatch(0, batchSize, tracked, locals, start, start.Add(10*time.Second))
	plainReq, err := encode(plain)
	if err != nil {
		b.Fatal(err)
	}
	// The attribute names, made once as the processor makes them.
	o := ownerOf(0, 0)
	keys := [3]string{
		flowschema.PrefixPeerOwner + flowschema.OwnerIDSuffix,
		flowschema.PrefixPeerOwner + o.Attributes[0].Name,
		flowschema.PrefixPeerOwner + o.Attributes[1].Name,
	}
	var (
		decode, write, encodePlain, encodeAttributed time.Duration
		attributedSize                               int
	)
	decodeBatch := func() plog.Logs {
		req := plogotlp.NewExportRequest()
		if err := req.UnmarshalProto(plainReq); err != nil {
			b.Fatal(err)
		}
		return req.Logs()
	}
	timeEncode := func(ld plog.Logs) (time.Duration, int) {
		t0 := time.Now()
		req, err := encode(ld)
		if err != nil {
			b.Fatal(err)
		}
		return time.Since(t0), len(req)
	}
	for i := 0; b.Loop(); i++ {
		t0 := time.Now()
		plainLogs := decodeBatch()
		decode += time.Since(t0)
		ld := decodeBatch()
		t1 := time.Now()
		lrs := ld.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords()
		for i := range lrs.Len() {
			a := lrs.At(i).Attributes()
			o := ownerOf(i, 0)
			a.PutStr(keys[0], o.ID)
			a.PutStr(keys[1], o.Attributes[0].Value)
			a.PutStr(keys[2], o.Attributes[1].Value)
			a.PutStr(flowschema.AttrPeerAttributionStatus, "attributed")
		}
		write += time.Since(t1)
		// Alternating which goes first, as the first finds the
		// batch less in the caches.
		var dp, da time.Duration
		if i%2 == 0 {
			dp, _ = timeEncode(plainLogs)
			da, attributedSize = timeEncode(ld)
		} else {
			da, attributedSize = timeEncode(ld)
			dp, _ = timeEncode(plainLogs)
		}
		encodePlain += dp
		encodeAttributed += da
	}
	perRecord := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N*batchSize) }
	b.ReportMetric(perRecord(decode), "decode-ns/record")
	b.ReportMetric(perRecord(write), "write-ns/record")
	b.ReportMetric(perRecord(encodePlain), "encode-ns/record")
	b.ReportMetric(perRecord(encodeAttributed), "attributed-encode-ns/record")
	b.ReportMetric(float64(attributedSize-len(plainReq))/batchSize, "extra-B/record")
	b.ReportMetric(float64(write+encodeAttributed-encodePlain)/float64(decode+encodePlain), "extra/passthrough")
}
