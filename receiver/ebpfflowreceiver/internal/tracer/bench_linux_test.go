package tracer

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/flowattr/flowattr/internal/testutil/discardserver"
)

// BenchmarkConnectLoopback measures connect + write + close on loopback, one
// connection at a time, without and with the tracer attached (its ring
// drained, as the receiver does). Each iteration runs four rounds of a
// detached and an attached window of the same connections, in alternating
// order, so that both see the same load from the rest of the machine; the
// ratio is of the summed rates. The tracer is loaded and closed outside the
// windows. cpu-ns/conn is the process's CPU time (user + system, which
// includes the BPF programs run in the test's syscalls and the ring reader)
// per connection.
func BenchmarkConnectLoopback(b *testing.B) {
	const (
		rounds = 4
		window = 5000
	)
	server := discardserver.Start(b, "127.0.0.1:0")
	var (
		wall, cpu [2]time.Duration
		conns     [2]int64
	)
	run := func(attached bool) {
		b.StopTimer()
		stop := func() {}
		if attached {
			_, stop = readInBackground(b, Options{}, func(*Event) {})
		}
		b.StartTimer()
		u0, s0 := processCPU(b)
		start := time.Now()
		made := connectLoop(b, server, 1, window, 0, nil)
		elapsed := time.Since(start)
		u1, s1 := processCPU(b)
		b.StopTimer()
		stop()
		b.StartTimer()
		i := 0
		if attached {
			i = 1
		}
		wall[i] += elapsed
		cpu[i] += u1 - u0 + s1 - s0
		conns[i] += made
	}
	for i := 0; b.Loop(); i++ {
		for r := range rounds {
			attachedFirst := (i+r)%2 == 1
			run(attachedFirst)
			run(!attachedFirst)
		}
	}
	rate := func(i int) float64 { return float64(conns[i]) / wall[i].Seconds() }
	b.ReportMetric(rate(0), "detached-conns/s")
	b.ReportMetric(rate(1), "attached-conns/s")
	b.ReportMetric(rate(1)/rate(0), "ratio")
	b.ReportMetric(float64(cpu[0].Nanoseconds())/float64(conns[0]), "detached-cpu-ns/conn")
	b.ReportMetric(float64(cpu[1].Nanoseconds())/float64(conns[1]), "attached-cpu-ns/conn")
}

// readInBackground loads a tracer with opts and reads it into handle until
// stop is called, which also closes the tracer.
func readInBackground(t testing.TB, opts Options, handle func(*Event)) (tr *Tracer, stop func()) {
	t.Helper()
	tr, err := New(opts)
	if errors.Is(err, ErrUnsupported) {
		t.Skipf("SKIPPING: eBPF tracing is not available here: %v", err)
	}
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Read(ctx, handle) }()
	return tr, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Read: %v", err)
		}
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}

// BenchmarkCloseRate drives connections to one loopback server from 8
// goroutines while the tracer reads, and reports the close rate (two
// sockets per connection), the records of the benchmark's own connections
// that arrived and the tracer's loss counters per iteration of 2 seconds of
// connections. Rings smaller than the default show where loss begins: at
// full speed, and with the connections paced to a target rate.
func BenchmarkCloseRate(b *testing.B) {
	for _, tc := range []struct {
		ring        int
		connsPerSec int // 0: as fast as the workers go
	}{
		{DefaultRingBufferSize, 0},
		{64 << 10, 0},
		{64 << 10, 2500},
		{64 << 10, 5000},
		{64 << 10, 10000},
		{16 << 10, 0},
		{4 << 10, 0},
	} {
		const workers = 8
		name := fmt.Sprintf("ring=%dKiB/rate=max", tc.ring>>10)
		var interval time.Duration
		if tc.connsPerSec > 0 {
			name = fmt.Sprintf("ring=%dKiB/rate=%d", tc.ring>>10, tc.connsPerSec)
			interval = workers * time.Second / time.Duration(tc.connsPerSec)
		}
		b.Run(name, func(b *testing.B) {
			var total closeRun
			for b.Loop() {
				total.add(runCloses(b, Options{RingBufferSize: tc.ring}, workers, interval, 2*time.Second))
			}
			b.ReportMetric(float64(total.closes())/total.elapsed.Seconds(), "closes/s")
			n := float64(b.N)
			b.ReportMetric(float64(total.records)/n, "records/op")
			b.ReportMetric(float64(total.lost)/n, "lost/op")
			b.ReportMetric(float64(total.birthMapFull)/n, "birth-map-full/op")
			b.ReportMetric(float64(total.missed)/n, "missed/op")
			b.ReportMetric(float64(total.unaccounted)/n, "unaccounted/op")
		})
	}
}

// BenchmarkDecode measures ring record bytes -> Event.
func BenchmarkDecode(b *testing.B) {
	rec := sampleRecord()
	clock := &bootClock{}
	var ev Event
	b.SetBytes(eventSize)
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if err := decodeEvent(rec, clock, &ev); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}
