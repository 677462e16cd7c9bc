package perf

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	// trackedAddresses have claims in the store before the measurement;
	// flow peers are spread over all of them.
	trackedAddresses = 100_000
	// heartbeatPeriod is how often every tracked address is claimed again
	// during the measurement (on the side of the flows).
	heartbeatPeriod = 10 * time.Second
	// heartbeatTick spreads each period's heartbeats over batches.
	heartbeatTick = 100 * time.Millisecond

	flowBatchSize  = 1000
	flowBatches    = 64 // distinct encoded batches, sent round-robin
	localsPerBatch = 16 // a node with a few pods
	// flowStreams bounds the flow requests in flight.
	flowStreams = 4

	warmUp = 2 * time.Second
	window = 5 * time.Second
)

// BenchmarkPipeline measures flow records per second through the built
// collector and the collector's CPU time per record, for the stock pipeline
// (otlp -> batch -> otlp_grpc) and the same with the ownership processor in
// front of the batch processor. Both get the same input: 100k addresses
// claimed by heartbeats before the measurement, flow records in batches of
// 1000 whose peers are spread over those addresses, sent by 4 concurrent
// streams as fast as the collector accepts them, and one heartbeat per
// address per 10s on the side. Flow records are counted where they arrive,
// at the benchmark's own OTLP sink. ns/op is wall time per delivered flow
// record; cpu-ns/record is the collector process's user+system time per
// delivered flow record. One b.Loop iteration is one 5s window (after a 2s
// warm-up); compare the two with `benchstat -col /pipeline`.
func BenchmarkPipeline(b *testing.B) {
	for _, p := range []struct{ name, config string }{
		{"stock", "../../testdata/perf/pipeline-stock.yaml"},
		{"ownership", "../../testdata/perf/pipeline-ownership.yaml"},
	} {
		b.Run("pipeline="+p.name, func(b *testing.B) { benchmarkPipeline(b, p.config, p.name == "ownership") })
	}
}

func benchmarkPipeline(b *testing.B, config string, attributes bool) {
	collectorBinary(b)
	sk := startSink(b)
	col := startCollector(b, config, map[string]string{"FLOWATTR_PERF_SINK_PORT": strconv.Itoa(sk.port)})
	client := dialOTLP(b, col.otlpPort)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Flows started 20s before now and are covered by the claims below, so
	// that they are attributed at once rather than held.
	now := time.Now()
	flows := make([][]byte, flowBatches)
	for n := range flows {
		var err error
		if flows[n], err = encode(flowBatch(n, flowBatchSize, trackedAddresses, localsPerBatch, now.Add(-20*time.Second), now.Add(-time.Second))); err != nil {
			b.Fatal(err)
		}
	}
	if err := sendHeartbeats(ctx, client, trackedAddresses, 1, 5000, 2, now.Add(-10*time.Minute), 0, 10*time.Minute); err != nil {
		b.Fatalf("seeding claims: %v", err)
	}

	load := startLoad(ctx, client, flows)
	time.Sleep(warmUp)

	var (
		records       int64
		cpu, loadCPU  time.Duration // the collector's, the benchmark's own
		elapsed, idle time.Duration // wall time, idle CPU time of the machine
	)
	for b.Loop() {
		f0, c0, l0, i0, t0 := sk.flows.Load(), col.cpuTime(b), selfCPU(b), machineIdle(b), time.Now()
		time.Sleep(window)
		f1, c1, l1, i1, t1 := sk.flows.Load(), col.cpuTime(b), selfCPU(b), machineIdle(b), time.Now()
		records += f1 - f0
		cpu += c1 - c0
		loadCPU += l1 - l0
		idle += i1 - i0
		elapsed += t1.Sub(t0)
	}
	b.StopTimer()
	if err := load.stop(); err != nil {
		b.Fatalf("load generator: %v", err)
	}
	col.stop(b)

	if records == 0 {
		b.Fatal("no flow record reached the sink")
	}
	// The collector has shut down and flushed: whatever it accepted must
	// have reached the sink, or the figures count a pipeline that drops.
	// Requests cut short by the stop may have been accepted unbeknown to
	// the generator.
	if sent, got := load.flows.Load(), sk.flows.Load(); got < sent || got > sent+flowStreams*flowBatchSize {
		b.Fatalf("the collector accepted %d flow records (up to %d more when stopped) and delivered %d", sent, flowStreams*flowBatchSize, got)
	}
	if n := sk.failures.Load(); n > 0 {
		b.Fatalf("sink could not parse %d requests", n)
	}
	if attributes {
		// Every flow's peer is claimed at its start: anything else means the
		// measurement did not exercise the attribution path (held records,
		// rejected claims).
		if f, a := sk.flows.Load(), sk.attributed.Load(); a != f {
			b.Fatalf("%d of %d flow records attributed at the sink", a, f)
		}
	}
	b.Logf("%d flow records in %s, %d heartbeats sent on the side (%d reached the sink); CPU: collector %s, generator and sink %s, machine idle %s of %d CPUs",
		records, elapsed.Round(time.Millisecond), load.heartbeats.Load(), sk.heartbeats.Load(), cpu, loadCPU, idle, runtime.NumCPU())
	perSecond := float64(records) / elapsed.Seconds()
	b.ReportMetric(perSecond, "records/s")
	b.ReportMetric(1e9/perSecond, "ns/op")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(records), "cpu-ns/record")
	b.ReportMetric(float64(loadCPU.Nanoseconds())/float64(records), "load-cpu-ns/record")
}

// load sends flows as fast as the collector accepts them over flowStreams
// concurrent requests, and heartbeats for every tracked address each
// heartbeatPeriod, until stopped.
type load struct {
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	flows      atomic.Int64 // flow records the collector accepted
	heartbeats atomic.Int64
	mu         sync.Mutex
	err        error // the first send error
}

func startLoad(ctx context.Context, client *otlpClient, flows [][]byte) *load {
	ctx, cancel := context.WithCancel(ctx)
	l := &load{cancel: cancel}
	for s := range flowStreams {
		l.wg.Go(func() {
			for i := s; ctx.Err() == nil; i += flowStreams {
				err := client.export(ctx, flows[i%len(flows)])
				if err == nil {
					l.flows.Add(flowBatchSize)
				}
				l.fail(ctx, err)
			}
		})
	}
	l.wg.Go(func() {
		perTick := int(trackedAddresses * heartbeatTick / heartbeatPeriod)
		tick := time.NewTicker(heartbeatTick)
		defer tick.Stop()
		for from := 0; ; from = (from + perTick) % trackedAddresses {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			now := time.Now()
			err := sendHeartbeatBatch(ctx, client, from, min(from+perTick, trackedAddresses), 0, now.Add(-heartbeatPeriod), now)
			if err == nil {
				l.heartbeats.Add(int64(perTick))
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
