package ownershipprocessor

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/processor/processortest"

	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadata"
)

// BenchmarkConsumeLogs measures the consume path with the default
// configuration: 100k addresses with claims, batches of 1000 flow records
// whose peers are spread over all of them (so lookups miss the CPU caches),
// each record applying its local claim and looking up its peer. A batch
// comes from one node: "locals=16" has 16 local addresses per batch, as a
// node with a few pods; "locals=1000" gives every record its own local
// address, the worst case for the store's Apply.
// Run on one core: go test -run '^$' -bench BenchmarkConsumeLogs -cpu 1
func BenchmarkConsumeLogs(b *testing.B) {
	for _, locals := range []int{16, 1000} {
		b.Run(fmt.Sprintf("locals=%d", locals), func(b *testing.B) { benchmarkConsumeLogs(b, locals) })
	}
}

func benchmarkConsumeLogs(b *testing.B, localsPerBatch int) {
	const (
		trackedIPs = 100_000
		batchSize  = 1000
		batches    = 16
	)
	addr := func(i int) string {
		return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String()
	}
	owner := func(i int) string { return fmt.Sprintf("workload-%d", i) }

	clk := newTestClock()
	set := processortest.NewNopSettings(metadata.Type)
	set.ID = component.NewID(metadata.Type)
	p, err := NewFactoryWithClock(clk).CreateLogs(context.Background(), set, createDefaultConfig(), consumertest.NewNop())
	require.NoError(b, err)
	require.NoError(b, p.Start(context.Background(), nil))
	b.Cleanup(func() { require.NoError(b, p.Shutdown(context.Background())) })

	claims := make([]func(plog.LogRecord), 0, trackedIPs)
	for i := range trackedIPs {
		claims = append(claims, claim(addr(i), owner(i), t0.Add(-10*time.Minute), t0, ""))
	}
	require.NoError(b, p.ConsumeLogs(context.Background(), logsOf(claims...)))

	work := make([]plog.Logs, batches)
	for n := range work {
		recs := make([]func(plog.LogRecord), batchSize)
		for i := range recs {
			local := (n*localsPerBatch + i%localsPerBatch) % trackedIPs
			peer := ((n*batchSize+i)*7919 + 13) % trackedIPs
			recs[i] = ownedFlow(addr(local), owner(local), addr(peer), t0.Add(-30*time.Second), t0)
		}
		work[n] = logsOf(recs...)
	}

	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; b.Loop(); i++ {
		// A batch is reused: its owner attributes from the previous pass are
		// replaced, which is slightly more work than a fresh record.
		if err := p.ConsumeLogs(context.Background(), work[i%batches]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batchSize)/time.Since(start).Seconds(), "records/s")
}
