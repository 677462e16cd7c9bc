//go:build linux

package perf

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flowattr/flowattr/test/internal/collectortest"
)

// rangesPerAddress is how many ranges every address gets: three owners one
// after the other, with gaps longer than merge_gap so none are joined.
const rangesPerAddress = 3

// BenchmarkMemory measures the collector's memory with 10k, 100k and 1M
// addresses tracked by the ownership processor, each claimed by 3 owners in
// turn (3 ranges), fed by claims over OTLP. Two baselines: ips=0, the
// same configuration idle, and, per size, the same collector sent the same
// claims with times past retention, which it decodes and rejects
// without storing them: what remains beyond the second is the memory of the
// ranges alone, without what serving the claims left in the runtime
// (connection buffers, pools, heap the GC has not returned). Reported:
// resident memory once settled (rss), peak resident memory (hwm, includes
// the garbage of decoding the claims) and the Go heap left after a GC
// forced through the pprof extension (heap, the store itself), in MiB and
// per range beyond the idle baseline (*-B/range) and beyond the traffic one
// (*-B/range-stored). ns/op is wall time per claim while filling.
func BenchmarkMemory(b *testing.B) {
	collectortest.Binary(b)
	var base *memorySample // the latest baseline
	b.Run("ips=0", func(b *testing.B) {
		var m memorySample
		for b.Loop() {
			m = measureMemory(b, 0, true)
		}
		base = &m
		m.report(b)
	})
	for _, addresses := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("ips=%d", addresses), func(b *testing.B) {
			if base == nil { // ips=0 was filtered out by -bench
				m := measureMemory(b, 0, true)
				base = &m
			}
			var m, traffic memorySample
			for b.Loop() {
				m = measureMemory(b, addresses, true)
				traffic = measureMemory(b, addresses, false)
			}
			ranges := float64(addresses * rangesPerAddress)
			m.report(b)
			b.ReportMetric(float64(m.fill.Nanoseconds())/ranges, "ns/op")
			b.ReportMetric(float64(m.rss-base.rss)/ranges, "rss-B/range")
			b.ReportMetric(float64(m.hwm-base.hwm)/ranges, "hwm-B/range")
			b.ReportMetric(float64(m.heap-base.heap)/ranges, "heap-B/range")
			b.ReportMetric(float64(m.rss-traffic.rss)/ranges, "rss-B/range-stored")
			b.ReportMetric(float64(m.heap-traffic.heap)/ranges, "heap-B/range-stored")
		})
	}
}

// memorySample is one collector's memory after its store was filled.
type memorySample struct {
	rss, hwm  int64         // settled VmRSS and peak VmHWM, bytes
	rssMetric int64         // the collector's own otelcol_process_memory_rss
	heap      int64         // Go heap in use after a forced GC, bytes
	fill      time.Duration // time to send and apply every claim
	settle    time.Duration // time for RSS to settle after the forced GC
}

func (m memorySample) report(b *testing.B) {
	b.Logf("rss %d MiB (otelcol_process_memory_rss %d MiB), hwm %d MiB, heap after GC %d MiB, filled in %s, rss settled in %s",
		m.rss>>20, m.rssMetric>>20, m.hwm>>20, m.heap>>20, m.fill.Round(time.Millisecond), m.settle.Round(100*time.Millisecond))
	const mib = 1 << 20
	b.ReportMetric(float64(m.rss)/mib, "rss-MiB")
	b.ReportMetric(float64(m.hwm)/mib, "hwm-MiB")
	b.ReportMetric(float64(m.heap)/mib, "heap-MiB")
}

// The collector is left alone after the forced GC until its RSS stops
// falling, for the runtime to return the pages freed after filling to the
// OS as it does in steady state (its background scavenger works at a bounded
// rate): settled is when RSS fell by less than settleSlack over settleQuiet,
// or settleMax has passed.
const (
	settleQuiet = 5 * time.Second
	settleSlack = 256 << 10
	settleMax   = 60 * time.Second
)

// settledRSS waits for the collector's RSS to settle and returns its memory
// then and how long that took.
func settledRSS(tb testing.TB, col *collector) (memory, time.Duration) {
	start := time.Now()
	m := col.memory(tb)
	low, lowAt := m.rss, start
	for time.Since(lowAt) < settleQuiet && time.Since(start) < settleMax {
		time.Sleep(500 * time.Millisecond)
		m = col.memory(tb)
		if m.rss < low-settleSlack {
			lowAt = time.Now()
		}
		low = min(low, m.rss)
	}
	return m, time.Since(start)
}

// measureMemory fills a new collector with claims for addresses, stored
// or (store false) all past retention, and measures it.
func measureMemory(tb testing.TB, addresses int, store bool) memorySample {
	tb.Helper()
	col := startCollector(tb, "../../testdata/perf/memory.yaml", nil)
	client := dialOTLP(tb, col.otlpPort)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	var m memorySample
	start := time.Now()
	// Range r covers [now-12m+3r min, now-10m+3r min]: inside the default
	// 15m retention, 1 minute apart; or the same an hour earlier, past it.
	from, keys := start.Add(-12*time.Minute), addresses
	if !store {
		from, keys = from.Add(-time.Hour), 0
	}
	if err := sendClaims(ctx, client, addresses, rangesPerAddress, 5000, 2, from, 3*time.Minute, 2*time.Minute); err != nil {
		tb.Fatalf("filling the store: %v", err)
	}
	m.fill = time.Since(start)

	for name, want := range map[string]int{"keys": keys, "ranges": keys * rangesPerAddress} {
		got, ok, err := col.metric(ctx, "otelcol_processor_ownership_"+name)
		if err != nil {
			tb.Fatal(err)
		}
		if (ok || want != 0) && int(got) != want {
			tb.Fatalf("store has %v %s, want %d", got, name, want)
		}
	}
	if !store {
		// The baseline did the work of the real fill: every claim
		// reached the store and was refused there as expired.
		body, err := col.Get(ctx, loopback(col.metricsPort), "/metrics")
		if err != nil {
			tb.Fatal(err)
		}
		want := addresses * rangesPerAddress
		if got := collectortest.MetricSum(body, "otelcol_processor_ownership_claims_rejected", "reason", "expired"); int(got) != want {
			tb.Fatalf("%v claims rejected as expired, want %d", got, want)
		}
	}

	heap, err := heapAfterGC(ctx, col)
	if err != nil {
		tb.Fatal(err)
	}
	m.heap = heap
	mem, took := settledRSS(tb, col)
	m.rss, m.hwm, m.settle = mem.rss, mem.hwm, took
	rss, ok, err := col.metric(ctx, "otelcol_process_memory_rss")
	if err != nil || !ok {
		tb.Fatalf("otelcol_process_memory_rss: exposed %v, %v", ok, err)
	}
	m.rssMetric = int64(rss)
	col.Stop(tb)
	return m
}

// heapAfterGC forces a GC in the collector through the pprof extension's heap
// profile (gc=1) and returns the HeapAlloc it reports right after. The first
// profile's GC only moves sync.Pool contents (gRPC and pdata buffers) to the
// pools' victim caches; the second one frees them.
func heapAfterGC(ctx context.Context, col *collector) (int64, error) {
	var body string
	for range 2 {
		var err error
		if body, err = col.Get(ctx, loopback(col.pprofPort), "/debug/pprof/heap?gc=1&debug=1"); err != nil {
			return 0, fmt.Errorf("heap profile: %w", err)
		}
	}
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "# HeapAlloc = "); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("no HeapAlloc in the heap profile")
}
