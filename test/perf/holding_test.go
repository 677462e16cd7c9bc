//go:build linux

package perf

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/flowattr/flowattr/test/internal/collectortest"
)

const (
	// holdWarmUp is longer than a claim period, so that the hold is full
	// (every waiting flow's peer has its next claim due) when the window
	// starts.
	holdWarmUp = 15 * time.Second
	holdWindow = 20 * time.Second
	// freshAge is how long before it is sent a fresh flow started: it waits
	// for its peer's next claim, 0 to claimPeriod later. A covered flow
	// started coveredAge before: its peer's claims so far cover it.
	freshAge   = time.Second
	coveredAge = 20 * time.Second
	// holdDrain bounds the wait for the hold to empty once the load stops:
	// a claim period and the hold check, with room for a loaded machine.
	holdDrain = 3 * claimPeriod
	// Claims go in requests of at most claimBatchMax, claimSenders at
	// once.
	claimBatchMax = 2000
	claimSenders  = 2
	// minHeldForMemory held records make the heap difference a figure
	// per record rather than noise.
	minHeldForMemory = 10_000
)

// BenchmarkHolding measures the built collector holding fresh flows, as a
// busy node or gateway does: flow records started 1s before they are sent,
// on 4 streams as fast as the collector takes them, with peers spread over
// 100k addresses each claimed every 10s (10k claims/s, each covering the
// 10s up to when it is sent), so nearly every flow waits for its peer's
// next claim. Pipeline: otlp -> ownership (max_wait 30s, max_pending as the
// sub-benchmark says; the default is 1200000) -> batch -> otlp_grpc to the benchmark's sink
// (testdata/perf/holding.yaml). After a 15s warm-up, a 20s window is
// measured. Reported: records/s at the sink and the collector's CPU per
// record over the window; held-peak, the most records held at once
// (sampled every second); heap-B/held, the live heap with the hold full
// less the live heap once it has emptied, per record held, both after a
// forced GC; rss-B/held the same for resident memory; hold-p50-s and
// hold-p99-s over the window, from the processor's hold_duration
// histogram (interpolated within its 1s buckets); overflow-records and
// timeout-records, the records that left the hold at max_pending or
// max_wait over the whole run; claims/s, the claims the collector took
// over the window (10k/s when they keep to their period); idle-cpu-%, the
// machine's idle CPU over the window. flows=covered sends the same flows
// started 20s before they are sent, which their peers' claims cover, so
// that none is held: the baseline. It fails if a record is lost.
func BenchmarkHolding(b *testing.B) {
	collectortest.Binary(b)
	for _, c := range []struct {
		name       string
		age        time.Duration
		maxPending int
	}{
		// The same load with flows that started 20s before they are
		// sent, so none is held: what holding costs.
		{"flows=covered", coveredAge, 1_200_000},
		{"flows=fresh/max_pending=100000", freshAge, 100_000},
		{"flows=fresh/max_pending=1200000", freshAge, 1_200_000},
	} {
		b.Run(c.name, func(b *testing.B) {
			var r holdRun
			for b.Loop() {
				r = measureHolding(b, c.age, c.maxPending)
			}
			r.report(b)
		})
	}
}

// holdRun is what one collector's run measured.
type holdRun struct {
	records, sent      int64
	claims             int64
	elapsed, cpu, idle time.Duration
	heldPeak           float64
	heldAtHeap         float64
	heapFull, heapIdle int64
	rssFull, rssIdle   int64
	hwm                int64
	p50, p99           float64
	overflow, timeout  float64
	unattributed       int64
}

func (r holdRun) report(b *testing.B) {
	perSecond := float64(r.records) / r.elapsed.Seconds()
	b.Logf("%d flow records in %s (%.0f/s), %d claims, collector CPU %s; held peak %.0f, %.0f at the heap reading; heap %d MiB full, %d MiB empty; rss %d MiB full, %d MiB empty, peak %d MiB; hold p50 %.2fs p99 %.2fs; overflow %.0f, timeout %.0f; %d of %d delivered unattributed; machine idle %s of %s",
		r.records, r.elapsed.Round(time.Millisecond), perSecond, r.claims, r.cpu, r.heldPeak, r.heldAtHeap, r.heapFull>>20, r.heapIdle>>20,
		r.rssFull>>20, r.rssIdle>>20, r.hwm>>20, r.p50, r.p99, r.overflow, r.timeout, r.unattributed, r.sent, r.idle, 2*r.elapsed)
	b.ReportMetric(perSecond, "records/s")
	b.ReportMetric(1e9/perSecond, "ns/op")
	b.ReportMetric(float64(r.cpu.Nanoseconds())/float64(r.records), "cpu-ns/record")
	b.ReportMetric(r.heldPeak, "held-peak")
	// Per held record only where records were held: the covered baseline
	// holds next to none.
	if r.heldAtHeap >= minHeldForMemory {
		b.ReportMetric(float64(r.heapFull-r.heapIdle)/r.heldAtHeap, "heap-B/held")
		b.ReportMetric(float64(r.rssFull-r.rssIdle)/r.heldAtHeap, "rss-B/held")
	}
	if !math.IsNaN(r.p50) {
		b.ReportMetric(r.p50, "hold-p50-s")
		b.ReportMetric(r.p99, "hold-p99-s")
	}
	b.ReportMetric(r.overflow, "overflow-records")
	b.ReportMetric(r.timeout, "timeout-records")
	b.ReportMetric(float64(r.claims)/r.elapsed.Seconds(), "claims/s")
	b.ReportMetric(100*r.idle.Seconds()/(2*r.elapsed.Seconds()), "idle-cpu-%")
}

// measureHolding runs one collector with the given max_pending through
// warm-up, window and drain.
func measureHolding(b *testing.B, age time.Duration, maxPending int) holdRun {
	s := startSink(b)
	col := startCollector(b, "../../testdata/perf/holding.yaml", map[string]string{
		"FLOWATTR_PERF_SINK_PORT":   strconv.Itoa(s.port),
		"FLOWATTR_PERF_MAX_PENDING": strconv.Itoa(maxPending),
	})
	client := dialOTLP(b, col.otlpPort)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	batches := make([]freshBatch, flowBatches)
	for n := range batches {
		batches[n] = newFreshBatch(b, n)
	}
	now := time.Now()
	if err := sendClaims(ctx, client, trackedAddresses, 1, 5000, 2, now.Add(-10*time.Minute), 0, 10*time.Minute); err != nil {
		b.Fatalf("seeding claims: %v", err)
	}

	var r holdRun
	l := startHoldLoad(ctx, client, batches, age, 0)
	time.Sleep(holdWarmUp)
	h0 := holdHistogram(b, col)
	f0, c0, i0, t0, n0 := s.flows.Load(), col.cpuTime(b), machineIdle(b), time.Now(), l.claims.Load()
	for time.Since(t0) < holdWindow {
		time.Sleep(time.Second)
		r.heldPeak = max(r.heldPeak, heldNow(b, col))
	}
	f1, c1, i1, t1, n1 := s.flows.Load(), col.cpuTime(b), machineIdle(b), time.Now(), l.claims.Load()
	h1 := holdHistogram(b, col)
	r.records, r.cpu, r.idle, r.elapsed, r.claims = f1-f0, c1-c0, i1-i0, t1.Sub(t0), n1-n0
	r.p50, r.p99 = h1.sub(h0).quantile(0.5), h1.sub(h0).quantile(0.99)

	// The load stops, flows and claims: once what was in flight has left
	// (the batch processor flushes every 200ms), the live heap and
	// resident memory with the hold full, and the records held then,
	// which nothing releases meanwhile (max_wait is 30s).
	if err := l.stop(); err != nil {
		b.Fatalf("load generator: %v", err)
	}
	r.sent = l.flows.Load()
	time.Sleep(time.Second)
	before := heldNow(b, col)
	heap, err := heapAfterGC(ctx, col)
	if err != nil {
		b.Fatal(err)
	}
	r.heapFull, r.rssFull = heap, col.memory(b).rss
	r.heldAtHeap = (before + heldNow(b, col)) / 2
	claims := startHoldLoad(ctx, client, nil, age, l.nextClaim)

	// Emptied: every held record goes on at its peer's next claim.
	deadline := time.Now().Add(holdDrain)
	for heldNow(b, col) > 0 {
		if time.Now().After(deadline) {
			b.Fatalf("%.0f records still held %s after the flows stopped", heldNow(b, col), holdDrain)
		}
		time.Sleep(time.Second)
	}
	if err := claims.stop(); err != nil {
		b.Fatalf("claims: %v", err)
	}
	if r.heapIdle, err = heapAfterGC(ctx, col); err != nil {
		b.Fatal(err)
	}
	idle, _ := settledRSS(b, col)
	r.rssIdle, r.hwm = idle.rss, idle.hwm
	body, err := col.Get(ctx, loopback(col.metricsPort), "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	released := "otelcol_processor_ownership_records_released"
	r.overflow = collectortest.MetricSum(body, released, "outcome", "overflow")
	r.timeout = collectortest.MetricSum(body, released, "outcome", "timeout")
	col.Stop(b)

	if n := s.failures.Load(); n > 0 {
		b.Fatalf("sink could not parse %d requests", n)
	}
	if got := s.flows.Load(); got < r.sent {
		b.Fatalf("the collector accepted at least %d flow records and delivered %d", r.sent, got)
	}
	r.unattributed = s.flows.Load() - s.attributed.Load()
	return r
}

// heldNow reads the records held now.
func heldNow(b *testing.B, col *collector) float64 {
	b.Helper()
	v, _, err := col.metric(context.Background(), "otelcol_processor_ownership_records_held")
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// freshBatch is an encoded batch of flow records whose start time and
// timestamps are rewritten in place before every send: the offsets of each
// record's start time (an int64 attribute value, a 9-byte varint for any
// time after 2001) and timestamps (fixed64).
type freshBatch struct {
	req        []byte
	starts     []int
	timestamps []int
}

// Placeholders written by flowBatch and found in the encoding: times in
// 2026, whose encodings appear nowhere else in a batch.
var (
	startMark = time.Unix(0, 1_777_777_777_123_456_789)
	endMark   = time.Unix(0, 1_777_777_778_987_654_321)
)

func newFreshBatch(tb testing.TB, n int) freshBatch {
	req, err := encode(flowBatch(n, flowBatchSize, trackedAddresses, localsPerBatch, startMark, endMark))
	if err != nil {
		tb.Fatal(err)
	}
	fb := freshBatch{
		req:        req,
		starts:     offsets(req, protowire.AppendVarint(nil, uint64(startMark.UnixNano()))),
		timestamps: offsets(req, binary.LittleEndian.AppendUint64(nil, uint64(endMark.UnixNano()))),
	}
	// One start time per record; its Timestamp and ObservedTimestamp.
	if len(fb.starts) != flowBatchSize || len(fb.timestamps) != 2*flowBatchSize {
		tb.Fatalf("batch %d: found %d start times and %d timestamps in the encoding, want %d and %d",
			n, len(fb.starts), len(fb.timestamps), flowBatchSize, 2*flowBatchSize)
	}
	return fb
}

func offsets(buf, pattern []byte) []int {
	var out []int
	for i := 0; ; {
		j := bytes.Index(buf[i:], pattern)
		if j < 0 {
			return out
		}
		out = append(out, i+j)
		i += j + len(pattern)
	}
}

// stamp makes the batch's flows start age before now and end now.
func (fb *freshBatch) stamp(now time.Time, age time.Duration) {
	start := protowire.AppendVarint(nil, uint64(now.Add(-age).UnixNano()))
	for _, o := range fb.starts {
		copy(fb.req[o:], start)
	}
	for _, o := range fb.timestamps {
		binary.LittleEndian.PutUint64(fb.req[o:], uint64(now.UnixNano()))
	}
}

// startHoldLoad sends, until stopped, the batches (if any) round-robin
// over flowStreams concurrent requests, each stamped before it is sent to
// have started age before (stream s sends batches s, s+flowStreams, ... only, so none is
// rewritten while another stream sends it), and claims every tracked
// address once per claimPeriod from address nextClaim on, each covering
// the claimPeriod up to when it is sent. Unlike startLoad's, the claims
// keep to their period on a loaded machine: each tick sends what has
// fallen due since the load started, so a late tick catches up.
func startHoldLoad(ctx context.Context, client *otlpClient, batches []freshBatch, age time.Duration, nextClaim int) *load {
	ctx, cancel := context.WithCancel(ctx)
	l := &load{cancel: cancel}
	for s := range min(flowStreams, len(batches)) {
		l.wg.Go(func() {
			for i := s; ctx.Err() == nil; i += flowStreams {
				fb := &batches[i%len(batches)]
				fb.stamp(time.Now(), age)
				err := client.export(ctx, fb.req)
				if err == nil {
					l.flows.Add(flowBatchSize)
				}
				l.fail(ctx, err)
			}
		})
	}
	l.wg.Go(func() {
		tick := time.NewTicker(claimTick)
		defer tick.Stop()
		started, sent, from := time.Now(), 0, nextClaim
		for {
			select {
			case <-ctx.Done():
				l.nextClaim = from
				return
			case <-tick.C:
			}
			due := int(float64(trackedAddresses)*time.Since(started).Seconds()/claimPeriod.Seconds()) - sent
			// Up to claimSenders requests at once, as claims come
			// from many peers.
			var wg sync.WaitGroup
			slots := make(chan struct{}, claimSenders)
			for due > 0 && ctx.Err() == nil {
				lo, n := from, min(due, claimBatchMax, trackedAddresses-from)
				slots <- struct{}{}
				wg.Go(func() {
					defer func() { <-slots }()
					now := time.Now()
					err := sendClaimBatch(ctx, client, lo, lo+n, 0, now.Add(-claimPeriod), now)
					if err == nil {
						l.claims.Add(int64(n))
					}
					l.fail(ctx, err)
				})
				sent, due, from = sent+n, due-n, (from+n)%trackedAddresses
			}
			wg.Wait()
		}
	})
	return l
}

// histogram is a cumulative Prometheus histogram: counts[i] observations
// at most bounds[i], the last bound +Inf.
type histogram struct {
	bounds []float64
	counts []float64
}

var (
	bucketLine = regexp.MustCompile(`(?m)^otelcol_processor_ownership_hold_duration(?:_seconds)?_bucket\{([^}]*)\} (\S+)$`)
	leLabel    = regexp.MustCompile(`(?:^|,)le="([^"]+)"`)
)

// holdHistogram reads the processor's hold_duration histogram.
func holdHistogram(b *testing.B, col *collector) histogram {
	b.Helper()
	body, err := col.Get(context.Background(), loopback(col.metricsPort), "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	byBound := map[float64]float64{}
	for _, m := range bucketLine.FindAllStringSubmatch(body, -1) {
		le := leLabel.FindStringSubmatch(m[1])
		if le == nil {
			continue
		}
		bound, err := strconv.ParseFloat(strings.Replace(le[1], "+Inf", "Inf", 1), 64)
		if err != nil {
			b.Fatalf("hold_duration bucket %q: %v", le[1], err)
		}
		n, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			b.Fatalf("hold_duration bucket %q: %v", m[2], err)
		}
		byBound[bound] += n
	}
	// Without a record held yet the histogram has no samples.
	var h histogram
	for bound := range byBound {
		h.bounds = append(h.bounds, bound)
	}
	sort.Float64s(h.bounds)
	for _, bound := range h.bounds {
		h.counts = append(h.counts, byBound[bound])
	}
	return h
}

// sub is h less an earlier reading of the same histogram.
func (h histogram) sub(earlier histogram) histogram {
	out := histogram{bounds: h.bounds, counts: make([]float64, len(h.counts))}
	for i := range h.counts {
		out.counts[i] = h.counts[i]
		if i < len(earlier.counts) {
			out.counts[i] -= earlier.counts[i]
		}
	}
	return out
}

// quantile interpolates the q-quantile linearly within its bucket, as
// Prometheus's histogram_quantile does; NaN without observations.
func (h histogram) quantile(q float64) float64 {
	if len(h.counts) == 0 || h.counts[len(h.counts)-1] == 0 {
		return math.NaN()
	}
	total := h.counts[len(h.counts)-1]
	rank := q * total
	lower, below := 0.0, 0.0
	for i, bound := range h.bounds {
		if h.counts[i] >= rank {
			if math.IsInf(bound, 1) {
				return lower
			}
			in := h.counts[i] - below
			if in == 0 {
				return bound
			}
			return lower + (bound-lower)*(rank-below)/in
		}
		lower, below = bound, h.counts[i]
	}
	return lower
}

// TestFreshBatchStamp checks that stamping rewrites every flow's start
// time and timestamps, and nothing else.
func TestFreshBatchStamp(t *testing.T) {
	fb := newFreshBatch(t, 3)
	want, err := encode(flowBatch(3, flowBatchSize, trackedAddresses, localsPerBatch, time.Unix(0, 1_800_000_000_000_000_000).Add(-freshAge), time.Unix(0, 1_800_000_000_000_000_000)))
	if err != nil {
		t.Fatal(err)
	}
	fb.stamp(time.Unix(0, 1_800_000_000_000_000_000), freshAge)
	if !bytes.Equal(fb.req, want) {
		t.Error("a stamped batch differs from the same batch encoded with those times")
	}
}

func TestHistogramQuantile(t *testing.T) {
	h := histogram{bounds: []float64{1, 2, 5, math.Inf(1)}, counts: []float64{0, 50, 100, 100}}
	for _, c := range []struct{ q, want float64 }{{0.25, 1.5}, {0.5, 2}, {0.75, 3.5}, {1, 5}} {
		if got := h.quantile(c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if got := h.sub(h).quantile(0.5); !math.IsNaN(got) {
		t.Errorf("quantile of no observations = %v, want NaN", got)
	}
	if got := (histogram{}).sub(histogram{}).quantile(0.5); !math.IsNaN(got) {
		t.Errorf("quantile of a histogram without samples = %v, want NaN", got)
	}
	over := histogram{bounds: []float64{1, math.Inf(1)}, counts: []float64{1, 4}}
	if got := over.quantile(0.9); got != 1 {
		t.Errorf("quantile beyond the last finite bound = %v, want that bound", got)
	}
}
