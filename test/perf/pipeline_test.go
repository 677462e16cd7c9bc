//go:build linux

package perf

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowattr/flowattr/test/internal/collectortest"
)

const (
	// trackedAddresses have claims in the store before the measurement;
	// flow peers are spread over all of them.
	trackedAddresses = 100_000
	// claimPeriod is how often every tracked address is claimed again
	// during the measurement (on the side of the flows).
	claimPeriod = 10 * time.Second
	// claimTick spreads each period's claims over batches.
	claimTick = 100 * time.Millisecond

	flowBatchSize  = 1000
	flowBatches    = 64 // distinct encoded batches, sent round-robin
	localsPerBatch = 16 // a node with a few pods
	// flowStreams bounds the flow requests in flight.
	flowStreams = 4

	// Each b.Loop iteration runs rounds pairs of windows; each window is
	// preceded by a warm-up with the load already on (the batch processor
	// flushes every 200ms, so the pipeline is full well within it).
	rounds = 4 // even, so that each pipeline goes first as often
	warmUp = time.Second
	window = 3 * time.Second
)

// BenchmarkPipeline measures flow records per second through the built
// collector and the collector's CPU time per record, for the stock pipeline
// (otlp -> batch -> otlp_grpc) and the same with the ownership processor in
// front of the batch processor. Both get the same input: 100k addresses
// claimed by claims before the measurement, flow records in batches of
// 1000 whose peers are spread over those addresses, sent by 4 concurrent
// streams as fast as the collector accepts them, and one claim per
// address per 10s on the side. Flow records are counted where they arrive,
// at the benchmark's own OTLP sink.
//
// On a shared machine the CPU available drifts by more than the difference
// being measured, so both collectors run side by side and each b.Loop
// iteration runs 4 rounds that load one, then the other (the order
// alternating), for a 3s window each after a 1s warm-up; only the loaded one
// does work. Reported per
// pipeline: records/s and cpu-ns/record (the collector process's user+system
// time per delivered flow record), and the ratios ownership/stock of both.
// ns/op is the ownership pipeline's wall time per delivered flow record.
func BenchmarkPipeline(b *testing.B) {
	collectortest.Binary(b)
	stock := startPipeline(b, "../../testdata/perf/pipeline-stock.yaml")
	ownership := startPipeline(b, "../../testdata/perf/pipeline-ownership.yaml")
	for b.Loop() {
		for i := range rounds {
			if i%2 == 0 {
				stock.measure(b)
				ownership.measure(b)
			} else {
				ownership.measure(b)
				stock.measure(b)
			}
		}
	}
	b.StopTimer()
	stock.finish(b, false)
	ownership.finish(b, true)

	b.ReportMetric(stock.perSecond(), "stock-records/s")
	b.ReportMetric(ownership.perSecond(), "ownership-records/s")
	b.ReportMetric(ownership.perSecond()/stock.perSecond(), "throughput-ratio")
	b.ReportMetric(stock.cpuPerRecord(), "stock-cpu-ns/record")
	b.ReportMetric(ownership.cpuPerRecord(), "ownership-cpu-ns/record")
	b.ReportMetric(ownership.cpuPerRecord()/stock.cpuPerRecord(), "cpu-ratio")
	b.ReportMetric(1e9/ownership.perSecond(), "ns/op")
}

// pipeline is one collector under test with its sink, the encoded flow
// batches to send it, and what its measurement windows added up to.
type pipeline struct {
	name   string
	sink   *sink
	col    *collector
	client *otlpClient
	flows  [][]byte
	// rate is the flow records per second sent; 0 sends as fast as the
	// collector accepts them.
	rate int
	sent int64 // flow records the collector accepted, over all windows
	// claims sent on the side, over all windows
	claims int64
	// nextClaim is the address the side claims go on from in the
	// next window, so that every address is claimed once per period.
	nextClaim int
	windows   int // measured so far

	records       int64
	cpu, loadCPU  time.Duration // the collector's, the benchmark's own
	elapsed, idle time.Duration // wall time, idle CPU time of the machine
}

// startPipeline starts the collector on config, with overlays laid over
// it, with its own sink, and claims every tracked address for 10 minutes up
// to now. The pipeline is named after the last file.
func startPipeline(b *testing.B, config string, overlays ...string) *pipeline {
	last := append([]string{config}, overlays...)[len(overlays)]
	p := &pipeline{name: strings.TrimSuffix(filepath.Base(last), ".yaml"), sink: startSink(b)}
	p.col = startCollector(b, config, map[string]string{"FLOWATTR_PERF_SINK_PORT": strconv.Itoa(p.sink.port)}, overlays...)
	p.client = dialOTLP(b, p.col.otlpPort)

	// Flows started 20s before now and are covered by the claims below, so
	// that they are attributed at once rather than held.
	now := time.Now()
	p.flows = make([][]byte, flowBatches)
	for n := range p.flows {
		var err error
		if p.flows[n], err = encode(flowBatch(n, flowBatchSize, trackedAddresses, localsPerBatch, now.Add(-20*time.Second), now.Add(-time.Second))); err != nil {
			b.Fatal(err)
		}
	}
	if err := sendClaims(context.Background(), p.client, trackedAddresses, 1, 5000, 2, now.Add(-10*time.Minute), 0, 10*time.Minute); err != nil {
		b.Fatalf("%s: seeding claims: %v", p.name, err)
	}
	return p
}

// measure loads the collector for warmUp plus one window and adds what the
// window saw.
func (p *pipeline) measure(b *testing.B) {
	load := startLoad(context.Background(), p.client, p.flows, p.nextClaim, p.rate)
	time.Sleep(warmUp)
	f0, c0, l0, i0, t0 := p.sink.flows.Load(), p.col.cpuTime(b), selfCPU(b), machineIdle(b), time.Now()
	if dir := os.Getenv(profileDirEnv); dir != "" {
		p.profile(b, dir)
	} else {
		time.Sleep(window)
	}
	f1, c1, l1, i1, t1 := p.sink.flows.Load(), p.col.cpuTime(b), selfCPU(b), machineIdle(b), time.Now()
	if err := load.stop(); err != nil {
		b.Fatalf("%s: load generator: %v", p.name, err)
	}
	p.sent += load.flows.Load()
	p.claims += load.claims.Load()
	p.nextClaim = load.nextClaim
	p.records += f1 - f0
	p.cpu += c1 - c0
	p.loadCPU += l1 - l0
	p.idle += i1 - i0
	p.elapsed += t1.Sub(t0)
}

// profileDirEnv names a directory where, when set, BenchmarkPipeline saves a
// CPU profile of the collector over each window, taken through its pprof
// extension: <pipeline>-<window>.pprof, for `go tool pprof`; and
// TestFloodMemory a heap profile after each run, flood-<keys>.heap.pprof.
const profileDirEnv = "FLOWATTR_PERF_PROFILE_DIR"

// profile takes a CPU profile over one window and saves it in dir.
func (p *pipeline) profile(b *testing.B, dir string) {
	p.windows++
	p.col.saveProfile(b, filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", p.name, p.windows)), window)
}

// saveProfile takes a CPU profile of the collector over d, through its
// pprof extension, and saves it at path.
func (c *collector) saveProfile(b *testing.B, path string, d time.Duration) {
	body, err := c.Get(context.Background(), loopback(c.pprofPort), fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d/time.Second)))
	if err != nil {
		b.Fatalf("CPU profile: %v", err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("CPU profile of the collector in %s", path)
}

// finish stops the collector and checks that the measurement measured
// what it claims to.
func (p *pipeline) finish(b *testing.B, attributes bool) {
	p.col.Stop(b)
	if p.records == 0 {
		b.Fatalf("%s: no flow record reached the sink", p.name)
	}
	if n := p.sink.failures.Load(); n > 0 {
		b.Fatalf("%s: sink could not parse %d requests", p.name, n)
	}
	// The collector has shut down and flushed: whatever it accepted must
	// have reached the sink, or the figures count a pipeline that drops.
	// Requests cut short when a window's load stopped may have been
	// accepted unbeknown to the generator.
	if got := p.sink.flows.Load(); got < p.sent {
		b.Fatalf("%s: the collector accepted at least %d flow records and delivered %d", p.name, p.sent, got)
	}
	if attributes {
		// Every flow's peer is claimed at its start: anything else means the
		// measurement did not exercise the attribution path (held records,
		// rejected claims).
		if f, a := p.sink.flows.Load(), p.sink.attributed.Load(); a != f {
			b.Fatalf("%s: %d of %d flow records attributed at the sink", p.name, a, f)
		}
	}
	b.Logf("%s: %d flow records in %s; %d claims sent on the side, %d reached the sink; CPU: collector %s, generator and sink %s (%.0f ns/record); idle CPU time of the machine %s",
		p.name, p.records, p.elapsed.Round(time.Millisecond), p.claims, p.sink.claims.Load(), p.cpu, p.loadCPU,
		float64(p.loadCPU.Nanoseconds())/float64(p.records), p.idle)
}

func (p *pipeline) perSecond() float64 { return float64(p.records) / p.elapsed.Seconds() }

func (p *pipeline) cpuPerRecord() float64 {
	return float64(p.cpu.Nanoseconds()) / float64(p.records)
}

// load sends flows as fast as the collector accepts them over flowStreams
// concurrent requests, and claims for every tracked address each
// claimPeriod, until stopped.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	flows  atomic.Int64 // flow records the collector accepted
	claims atomic.Int64
	// nextClaim is the first address of the claim batch that was not
	// sent; read it after stop.
	nextClaim int
	mu        sync.Mutex
	err       error // the first send error
}

// startLoad sends flows round-robin, rate records per second (0: as fast
// as the collector accepts them), and claims from address nextClaim on.
func startLoad(ctx context.Context, client *otlpClient, flows [][]byte, nextClaim, rate int) *load {
	ctx, cancel := context.WithCancel(ctx)
	l := &load{cancel: cancel}
	for s := range flowStreams {
		l.wg.Go(func() {
			var pace <-chan time.Time
			if rate > 0 {
				tick := time.NewTicker(time.Duration(flowStreams*flowBatchSize) * time.Second / time.Duration(rate))
				defer tick.Stop()
				pace = tick.C
			}
			for i := s; ctx.Err() == nil; i += flowStreams {
				if pace != nil {
					select {
					case <-ctx.Done():
						return
					case <-pace:
					}
				}
				err := client.export(ctx, flows[i%len(flows)])
				if err == nil {
					l.flows.Add(flowBatchSize)
				}
				l.fail(ctx, err)
			}
		})
	}
	l.wg.Go(func() {
		perTick := int(trackedAddresses * claimTick / claimPeriod)
		tick := time.NewTicker(claimTick)
		defer tick.Stop()
		for from := nextClaim; ; from = (from + perTick) % trackedAddresses {
			select {
			case <-ctx.Done():
				l.nextClaim = from
				return
			case <-tick.C:
			}
			now := time.Now()
			err := sendClaimBatch(ctx, client, from, min(from+perTick, trackedAddresses), 0, now.Add(-claimPeriod), now)
			if err == nil {
				l.claims.Add(int64(perTick))
			}
			l.fail(ctx, err)
		}
	})
	return l
}

// fail records the first error that is not due to stopping.
func (l *load) fail(ctx context.Context, err error) {
	if err == nil || ctx.Err() != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = err
	}
}

func (l *load) stop() error {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	if errors.Is(l.err, context.Canceled) {
		return nil
	}
	return l.err
}
