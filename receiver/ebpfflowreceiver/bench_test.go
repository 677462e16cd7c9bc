//go:build linux

package ebpfflowreceiver

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/flowattr/flowattr/internal/localowner"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/internal/testutil/discardserver"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/metadatatest"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/tracer"
)

// BenchmarkAddFlow measures the emitter's work per flow event: owner lookup,
// claim aggregation, conversion to a record and its share of a batch
// handed to a no-op pipeline. records/s is per core with -cpu 1; the ring
// record decoding before it is internal/tracer's BenchmarkDecode.
func BenchmarkAddFlow(b *testing.B) {
	cfg := createDefaultConfig()
	clock := newManualClock(at(0))
	r, err := newFlowReceiver(metadatatest.NewSettings(componenttest.NewTelemetry()), cfg, consumertest.NewNop(), testEnvironment(nil, clock, ""))
	if err != nil {
		b.Fatal(err)
	}
	src, err := localowner.NewStaticSource(map[netip.Prefix]owners.Owner{
		netip.MustParsePrefix("10.0.0.0/16"): {ID: "pool"},
		netip.MustParsePrefix("10.0.0.1/32"): {ID: "web"},
	}, nil, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	r.ownership = localowner.New([]localowner.Source{src}, localowner.Settings{Now: clock.Now, BootNow: clock.Boot, Logger: zap.NewNop()})
	r.claims = localowner.NewClaimer(r.ownership, "n", at(0))
	r.batch = newBatch(pcommon.NewResource(), "", cfg.MaxBatchSize)
	r.flows = newFlowWriter()
	ev := tracer.Event{
		Kind: tracer.KindClosed, Role: tracer.RoleClient,
		LocalAddr: netip.MustParseAddr("10.0.3.7"), LocalPort: 40000,
		PeerAddr: netip.MustParseAddr("10.1.0.9"), PeerPort: 443,
		Start: at(1), StartKnown: true, End: at(2), BytesSent: 1000, BytesReceived: 2000,
		PID: 42, Comm: "curl", CgroupID: 7, NetnsInode: 4026531840, Cookie: 1,
	}
	ctx := context.Background()
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		r.addFlow(ctx, &ev, clock.Now())
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}

// The kernel benchmark's server address, apart from the integration test's
// so that the include filter keeps only the benchmark's flows. Clients
// connect from 127.0.0.1: binding a client address first would make every
// connect search for a port free of TIME_WAIT sockets.
const (
	benchServer = "127.78.0.1"
	benchClient = "127.0.0.1"
	benchNet    = "127.78.0.0/24"
)

// BenchmarkReceiverKernel measures the receiver's user-space cost per record
// from the real kernel ring buffer to plog, end to end: the receiver runs
// with the real tracer and a counting consumer while the benchmark makes
// loopback connections, one at a time. Each iteration runs four rounds of a
// window without the receiver and one with it, the same connections each,
// in alternating order; a receiver window ends when the consumer has every
// record (so no record was lost or dropped). The receiver's cost is the
// process CPU time of the receiver windows minus that of the windows without
// it, per record: user-ns/record is the Go side (ring reading, decoding,
// filtering, the queue, conversion and batching), records/s/core its
// inverse; system-ns/record adds the BPF programs, which run in the
// benchmark's own connect and close calls, and the ring reader's system
// calls. Run it with -cpu 1 so everything shares one core.
func BenchmarkReceiverKernel(b *testing.B) {
	if probe, err := tracer.New(tracer.Options{}); errors.Is(err, tracer.ErrUnsupported) {
		b.Skipf("SKIPPED: the eBPF tracer cannot run here: %v", err)
	} else if err != nil {
		b.Fatal(err)
	} else if err := probe.Close(); err != nil {
		b.Fatal(err)
	}
	const (
		rounds = 4
		window = 5000 // connections, two records each
	)
	server := discardserver.Start(b, benchServer+":0").String()
	cfg := createDefaultConfig()
	cfg.Filter.ExcludeLoopback = false
	cfg.Filter.IncludeCIDRs = []string{benchNet}
	cfg.Ownership.Static.Entries = []owners.Entry{
		{Prefixes: []string{benchNet}, ID: "bench-server"},
		{Prefixes: []string{benchClient}, ID: "bench-client"},
	}
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}

	var (
		user, system [2]time.Duration
		records      int64
	)
	run := func(attached bool) {
		b.StopTimer()
		var (
			received atomic.Int64
			want     = int64(2 * window)
			all      = make(chan struct{})
			once     sync.Once
		)
		var rcv interface {
			Shutdown(context.Context) error
		}
		if attached {
			sink, err := consumer.NewLogs(func(_ context.Context, ld plog.Logs) error {
				if received.Add(int64(ld.LogRecordCount())) >= want {
					once.Do(func() { close(all) })
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			r, err := NewFactory().CreateLogs(context.Background(), metadatatest.NewSettings(componenttest.NewTelemetry()), cfg, sink)
			if err != nil {
				b.Fatal(err)
			}
			if err := r.Start(context.Background(), componenttest.NewNopHost()); err != nil {
				b.Fatal(err)
			}
			rcv = r
		}
		// Collect what loading the tracer left behind, outside the window.
		runtime.GC()
		b.StartTimer()
		u0, s0 := benchProcessCPU(b)
		benchConnect(b, server, window)
		if attached {
			select {
			case <-all:
			case <-time.After(10 * time.Second):
				b.Fatalf("%d of %d records after 10s", received.Load(), want)
			}
		}
		u1, s1 := benchProcessCPU(b)
		b.StopTimer()
		i := 0
		if attached {
			i = 1
			if err := rcv.Shutdown(context.Background()); err != nil {
				b.Fatal(err)
			}
			records += received.Load()
		}
		b.StartTimer()
		user[i] += u1 - u0
		system[i] += s1 - s0
	}
	for i := 0; b.Loop(); i++ {
		for r := range rounds {
			attachedFirst := (i+r)%2 == 1
			run(attachedFirst)
			run(!attachedFirst)
		}
	}
	perRecord := func(d [2]time.Duration) float64 { return float64((d[1] - d[0]).Nanoseconds()) / float64(records) }
	b.ReportMetric(perRecord(user), "user-ns/record")
	b.ReportMetric(perRecord(system), "system-ns/record")
	b.ReportMetric(1e9/perRecord(user), "records/s/core")
}

// benchConnect makes n connections to server, one at a time, each writing
// 100 bytes and closing.
func benchConnect(b *testing.B, server string, n int) {
	payload := make([]byte, 100)
	for range n {
		c, err := net.Dial("tcp4", server)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(payload); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

func benchProcessCPU(b *testing.B) (user, system time.Duration) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}
