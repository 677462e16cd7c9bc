package ownershipprocessor

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/processor/processortest"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/intervalstore"
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
	runtime.GC()
	b.ResetTimer()
	start, startCPU := time.Now(), processCPU()
	for i := 0; b.Loop(); i++ {
		// A batch is reused: its owner attributes from the previous pass are
		// replaced, which is slightly more work than a fresh record.
		if err := p.ConsumeLogs(context.Background(), work[i%batches]); err != nil {
			b.Fatal(err)
		}
	}
	records := float64(b.N * batchSize)
	b.ReportMetric(records/time.Since(start).Seconds(), "records/s")
	// On a machine shared with other processes, the wall clock counts the
	// time this one waited for a CPU; its CPU time does not.
	if cpu := processCPU() - startCPU; cpu > 0 {
		b.ReportMetric(records/cpu.Seconds(), "records/cpu-s")
	}
}

// BenchmarkConsumeClaims measures the heartbeat's cost in the processor,
// beside BenchmarkConsumeLogs' per flow record: claim records for 100k
// tracked addresses, in batches of 1000, each renewing its address's claim
// for one more claim interval, so that the store extends the address's
// newest range. claims/cpu-s counts the CPU time of ConsumeLogs only, not
// that of building the batches.
// Run on one core: go test -run '^$' -bench BenchmarkConsumeClaims -cpu 1
func BenchmarkConsumeClaims(b *testing.B) {
	const (
		trackedIPs = 100_000
		batchSize  = 1000
		interval   = 10 * time.Second
	)
	addr := func(i int) string {
		return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String()
	}
	clk := newTestClock()
	set := processortest.NewNopSettings(metadata.Type)
	set.ID = component.NewID(metadata.Type)
	p, err := NewFactoryWithClock(clk).CreateLogs(context.Background(), set, createDefaultConfig(), consumertest.NewNop())
	require.NoError(b, err)
	require.NoError(b, p.Start(context.Background(), nil))
	b.Cleanup(func() { require.NoError(b, p.Shutdown(context.Background())) })
	batch := func(first int, start, end time.Time) plog.Logs {
		recs := make([]func(plog.LogRecord), batchSize)
		for i := range recs {
			a := (first + i) % trackedIPs
			recs[i] = claim(addr(a), fmt.Sprintf("workload-%d", a), start, end, "")
		}
		return logsOf(recs...)
	}
	for first := 0; first < trackedIPs; first += batchSize {
		require.NoError(b, p.ConsumeLogs(context.Background(), batch(first, t0.Add(-interval), t0)))
	}

	b.ReportAllocs()
	var cpu time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		// Pass n over the addresses claims [t0+(n-1)*interval, t0+n*interval],
		// the processor's clock at its end.
		first := i * batchSize % trackedIPs
		n := 1 + i*batchSize/trackedIPs
		end := t0.Add(time.Duration(n) * interval)
		if first == 0 {
			clk.Set(end)
		}
		ld := batch(first, end.Add(-interval), end)
		b.StartTimer()
		before := processCPU()
		if err := p.ConsumeLogs(context.Background(), ld); err != nil {
			b.Fatal(err)
		}
		cpu += processCPU() - before
	}
	if cpu > 0 {
		b.ReportMetric(float64(b.N*batchSize)/cpu.Seconds(), "claims/cpu-s")
	}
	// The last claim renewed its address's range to the clock's time.
	last := (b.N*batchSize - 1) % trackedIPs
	store := p.(*ownershipProcessor).store
	res := store.Lookup(intervalstore.AddrKey(mustAddr(addr(last))), clk.Now().Add(-time.Second))
	require.Equal(b, intervalstore.Attributed, res.Status, "address %d at %v: %+v", last, clk.Now(), res)
}

// BenchmarkHoldMemory measures the live heap each held flow record costs:
// 100k records, each with the attributes the ebpfflow receiver writes
// (addresses and ports, client and server sides, process, byte and segment
// counts, times, a local owner with two attributes), wait for peers no
// claim covers. max_pending times this figure is what a full hold costs.
func BenchmarkHoldMemory(b *testing.B) {
	const held, batchSize = 100_000, 1000
	for b.Loop() {
		cfg := createDefaultConfig()
		cfg.MaxPending = held
		set := processortest.NewNopSettings(metadata.Type)
		sink := new(consumertest.LogsSink)
		p, err := NewFactoryWithClock(newTestClock()).CreateLogs(context.Background(), set, cfg, sink)
		require.NoError(b, err)
		require.NoError(b, p.Start(context.Background(), nil))
		before := liveHeap()
		for n := range held / batchSize {
			recs := make([]func(plog.LogRecord), batchSize)
			for i := range recs {
				recs[i] = receiverFlow(n*batchSize + i)
			}
			require.NoError(b, p.ConsumeLogs(context.Background(), logsOf(recs...)))
		}
		b.ReportMetric(float64(liveHeap()-before)/held, "B/held-record")
		require.Zero(b, sink.LogRecordCount(), "every record held")
		require.NoError(b, p.Shutdown(context.Background()))
	}
}

// receiverFlow is flow record i as the ebpfflow receiver writes it, from a
// local workload to a peer no claim covers.
func receiverFlow(i int) func(plog.LogRecord) {
	local := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}).String()
	peer := netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}).String()
	return func(lr plog.LogRecord) {
		ownedFlow(local, fmt.Sprintf("workload-%d", i%500), peer, t0.Add(-time.Second), t0)(lr)
		a := lr.Attributes()
		a.PutStr(flowschema.PrefixLocalOwner+"service.name", fmt.Sprintf("svc-%d", i%50))
		a.PutStr(flowschema.PrefixLocalOwner+"k8s.namespace.name", "shop")
		a.PutStr(flowschema.AttrNetworkTransport, "tcp")
		a.PutStr(flowschema.AttrNetworkType, "ipv4")
		a.PutInt(flowschema.AttrNetworkLocalPort, int64(40000+i%20000))
		a.PutInt(flowschema.AttrNetworkPeerPort, 8080)
		a.PutStr(flowschema.AttrClientAddress, local)
		a.PutInt(flowschema.AttrClientPort, int64(40000+i%20000))
		a.PutStr(flowschema.AttrServerAddress, peer)
		a.PutInt(flowschema.AttrServerPort, 8080)
		a.PutInt(flowschema.AttrProcessPID, 4242)
		a.PutStr(flowschema.AttrProcessExecutableName, "checkout")
		a.PutStr(flowschema.AttrFlowRole, flowschema.RoleClient)
		a.PutStr(flowschema.AttrFlowState, flowschema.FlowStateClosed)
		a.PutInt(flowschema.AttrFlowSocketCookie, int64(i))
		a.PutInt(flowschema.AttrFlowBytesSent, 1234)
		a.PutInt(flowschema.AttrFlowBytesReceived, 56789)
		a.PutInt(flowschema.AttrFlowSegmentsSent, 12)
		a.PutInt(flowschema.AttrFlowSegmentsReceived, 40)
		a.PutInt(flowschema.AttrFlowRetransmits, 0)
		a.PutInt(flowschema.AttrFlowSRTT, 250)
		a.PutInt(flowschema.AttrCgroupID, 7777)
		a.PutInt(flowschema.AttrNetnsInode, 4026531840)
	}
}

// liveHeap returns the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
