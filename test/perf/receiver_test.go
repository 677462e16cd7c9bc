//go:build linux

package perf

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowattr/flowattr/test/internal/collectortest"
	"github.com/flowattr/flowattr/test/internal/netns"
)

// The receiver benchmark's two namespaces and their link, apart from every
// other test's addresses so that the receiver's include filter keeps only
// the benchmark's connections.
var (
	rxNet    = netip.MustParsePrefix("10.213.16.0/24")
	rxServer = netip.MustParseAddr("10.213.16.1")
	rxClient = netip.MustParseAddr("10.213.16.2")
)

const (
	// rxWorkers make connections concurrently, each on its own thread in
	// the client namespace.
	rxWorkers = 4
	// rxPayload is what each connection writes before it closes.
	rxPayload = 100
	// rxRounds pairs of windows per b.Loop iteration, each pair one
	// window with the collector running and one without, the order
	// alternating; even, so that each goes first as often.
	rxRounds = 4
	// rxWarmUp runs the load before each window: the collector's pipeline
	// is full well within it.
	rxWarmUp = time.Second
	rxWindow = 5 * time.Second
	// rxSettle is how long the benchmark waits, after the load of a
	// collector's window stopped, for records to stop arriving at the
	// sink: the receiver flushes every second and the batch processor
	// every 200ms.
	rxSettle = 3 * time.Second
)

// BenchmarkReceiver measures what the ebpfflow receiver costs a host that
// makes short TCP connections, in the built collector
// (testdata/perf/receiver.yaml: ebpfflow -> batch -> otlp_grpc, without
// compression, to the benchmark's sink, which counts the flow records). A
// client and a server network namespace are joined by a veth pair; 4
// workers in the client namespace connect to the server, write 100 bytes
// and close, as fast as they go, and the server reads each connection to
// its end and closes it. Every connection is two flow records, one per
// side.
//
// Each b.Loop iteration runs 4 rounds of a window with the collector
// running and one without, each kind going first in turn; each window is a
// 1s warm-up and 5s measured with the load on. The collector is started
// before its window's load and stopped after it, once its records have
// reached the sink. Reported: conns/s with the collector running and
// without (idle-conns/s) and their ratio, rate-ratio; the collector's CPU
// time (utime + stime from /proc/<pid>/stat) per flow record made in its
// windows, cpu-us/record, and its user and system parts; lost-records,
// the records the collector's connections should have made (2 per
// connection, warm-ups included) that did not reach the sink, and
// receiver-drops, the sum of the receiver's own loss counters (ring
// reserve failures, full connection map, skipped program runs, its full
// queue). It fails if a connection fails or a record is lost.
//
// With FLOWATTR_PERF_BASELINE_BIN set to another collector binary (a build
// before a change), each round also has a window of that collector, and its
// figures are reported with the prefix baseline-, beside
// cpu-ratio-to-baseline. With FLOWATTR_PERF_PROFILE_DIR set, the
// collector's CPU profile over each of its windows is saved there as
// receiver-<n>.pprof (receiver-baseline-<n>.pprof). With
// FLOWATTR_PERF_COLLECTOR_CPUS set, the collector runs on those CPUs only.
// The figures and where the collector's time goes: docs/performance.md.
func BenchmarkReceiver(b *testing.B) {
	collectortest.Binary(b)
	if missing := netns.Missing(); len(missing) > 0 {
		b.Skipf("SKIPPED, NOT RUN: needs %v", missing)
	}
	baseline := os.Getenv(baselineBinEnv)
	w := startConnWorkload(b)
	s := startSink(b)
	var on, off, base rxWindows
	windows := 0
	kinds := []func(){
		func() { off.add(w.measure(b, nil, "")) },
		func() {
			windows++
			on.add(w.measureWithCollector(b, s, "", fmt.Sprintf("receiver-%d.pprof", windows)))
		},
	}
	if baseline != "" {
		kinds = append(kinds, func() {
			windows++
			base.add(w.measureWithCollector(b, s, baseline, fmt.Sprintf("receiver-baseline-%d.pprof", windows)))
		})
	}
	for b.Loop() {
		for i := range rxRounds {
			// Each kind of window goes first in turn.
			for k := range kinds {
				kinds[(i+k)%len(kinds)]()
			}
		}
	}
	b.StopTimer()
	on.report(b, "", &off)
	b.Logf("with the collector: %d connections in %s, %d records expected over the load, %d lost, receiver drops %d; "+
		"without: %d connections in %s; idle CPU of the machine %s with, %s without",
		on.windowConns, on.elapsed.Round(time.Millisecond), on.expected, on.lost, on.drops,
		off.windowConns, off.elapsed.Round(time.Millisecond), on.idle, off.idle)
	if baseline != "" {
		base.report(b, "baseline-", &off)
		b.ReportMetric(on.cpuPerRecord()/base.cpuPerRecord(), "cpu-ratio-to-baseline")
		b.Logf("with the baseline collector: %d connections in %s, %d records expected over the load, %d lost, receiver drops %d",
			base.windowConns, base.elapsed.Round(time.Millisecond), base.expected, base.lost, base.drops)
	}
	for _, m := range []*rxWindows{&on, &base} {
		if m.lost > 0 || m.drops > 0 {
			b.Fatalf("%d of %d flow records lost, receiver drops %d", m.lost, m.expected, m.drops)
		}
	}
}

// baselineBinEnv names a second collector binary, such as a build before a
// change, that BenchmarkReceiver, when it is set, measures in windows of
// its own alongside the others, reporting its figures with the prefix
// baseline- and cpu-ratio-to-baseline.
const baselineBinEnv = "FLOWATTR_PERF_BASELINE_BIN"

// rxWindows adds up the measured windows of one kind.
type rxWindows struct {
	windowConns   int64         // connections made in the measured windows
	elapsed, idle time.Duration // their wall time; idle CPU time of the machine
	user, system  time.Duration // the collector's CPU time in them
	// Over each collector's whole load, warm-up included: the records its
	// connections should have made, how many did not reach the sink, and
	// the receiver's loss counters.
	expected, lost, drops int64
}

func (r *rxWindows) add(w rxWindows) {
	r.windowConns += w.windowConns
	r.elapsed += w.elapsed
	r.idle += w.idle
	r.user += w.user
	r.system += w.system
	r.expected += w.expected
	r.lost += w.lost
	r.drops += w.drops
}

func (r *rxWindows) rate() float64 { return float64(r.windowConns) / r.elapsed.Seconds() }

// cpuPerRecord is the collector's CPU time per flow record, µs.
func (r *rxWindows) cpuPerRecord() float64 {
	return float64((r.user + r.system).Nanoseconds()) / 1e3 / float64(2*r.windowConns)
}

// report reports the windows of a collector, against off, those without.
func (r *rxWindows) report(b *testing.B, prefix string, off *rxWindows) {
	records := float64(2 * r.windowConns)
	b.ReportMetric(r.rate(), prefix+"conns/s")
	if prefix == "" {
		b.ReportMetric(off.rate(), "idle-conns/s")
	}
	b.ReportMetric(r.rate()/off.rate(), prefix+"rate-ratio")
	b.ReportMetric(r.cpuPerRecord(), prefix+"cpu-us/record")
	b.ReportMetric(float64(r.user.Nanoseconds())/1e3/records, prefix+"user-us/record")
	b.ReportMetric(float64(r.system.Nanoseconds())/1e3/records, prefix+"system-us/record")
	b.ReportMetric(float64(r.lost), prefix+"lost-records")
	b.ReportMetric(float64(r.drops), prefix+"receiver-drops")
}

// connWorkload is a TCP server in one network namespace and the client
// namespace its connections come from.
type connWorkload struct {
	clientNS, server string
}

// startConnWorkload creates the namespaces and starts the server.
func startConnWorkload(b *testing.B) *connWorkload {
	tag := fmt.Sprintf("%05d", os.Getpid()%100000)
	client := netns.End{NS: "flowattr-perf-rx-" + tag + "-c", Dev: "frx" + tag + "c", Prefix: netip.PrefixFrom(rxClient, rxNet.Bits())}
	server := netns.End{NS: "flowattr-perf-rx-" + tag + "-s", Dev: "frx" + tag + "s", Prefix: netip.PrefixFrom(rxServer, rxNet.Bits())}
	netns.Pair(b, client, server)
	// The client closes first, so its sockets wait in TIME_WAIT: let new
	// connections take over their ports rather than run out of them.
	for _, sysctl := range []string{"net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1"} {
		netns.IP(b, "netns", "exec", client.NS, "sysctl", "-q", "-w", sysctl)
	}
	l, err := netns.Listen(server.NS, net.JoinHostPort(rxServer.String(), "0"))
	if err != nil {
		b.Fatal(err)
	}
	var served sync.WaitGroup
	b.Cleanup(func() {
		l.Close()
		served.Wait()
	})
	served.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			served.Go(func() {
				_, _ = io.Copy(io.Discard, c)
				c.Close()
			})
		}
	})
	return &connWorkload{clientNS: client.NS, server: l.Addr().String()}
}

// connLoad is the workers' load, running until stopped.
type connLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	conns  atomic.Int64 // connections made and closed
	errMu  sync.Mutex
	err    error
}

func (w *connWorkload) start() *connLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &connLoad{cancel: cancel}
	for range rxWorkers {
		l.wg.Go(func() {
			// The worker's thread stays in the client namespace: every
			// socket it creates is made there.
			err := netns.In(w.clientNS, func() error {
				payload := make([]byte, rxPayload)
				var d net.Dialer
				for ctx.Err() == nil {
					c, err := d.Dial("tcp4", w.server)
					if err != nil {
						return err
					}
					_, err = c.Write(payload)
					if cerr := c.Close(); err == nil {
						err = cerr
					}
					if err != nil {
						return err
					}
					l.conns.Add(1)
				}
				return nil
			})
			if err != nil {
				l.errMu.Lock()
				l.err = err
				l.errMu.Unlock()
				cancel()
			}
		})
	}
	return l
}

func (l *connLoad) stop(b *testing.B) int64 {
	l.cancel()
	l.wg.Wait()
	if l.err != nil {
		b.Fatalf("connection workload: %v", l.err)
	}
	return l.conns.Load()
}

// measure runs the load for a warm-up and one window; col, when not nil, is
// the collector whose CPU time the window reads, and profile names the file
// of its CPU profile over the window.
func (w *connWorkload) measure(b *testing.B, col *collector, profile string) (m rxWindows) {
	load := w.start()
	time.Sleep(rxWarmUp)
	var u0, s0, u1, s1 time.Duration
	c0, i0, t0 := load.conns.Load(), machineIdle(b), time.Now()
	if col != nil {
		u0, s0 = col.cpuTimes(b)
	}
	if dir := os.Getenv(profileDirEnv); dir != "" && col != nil {
		col.saveProfile(b, filepath.Join(dir, profile), rxWindow)
	} else {
		time.Sleep(rxWindow)
	}
	if col != nil {
		u1, s1 = col.cpuTimes(b)
	}
	c1, i1, t1 := load.conns.Load(), machineIdle(b), time.Now()
	all := load.stop(b)
	m = rxWindows{windowConns: c1 - c0, elapsed: t1.Sub(t0), idle: i1 - i0, user: u1 - u0, system: s1 - s0}
	m.expected = 2 * all
	return m
}

// measureWithCollector starts a collector of binary bin (Binary's when
// empty), measures a window with it and stops it once its records reached
// the sink. profile names the file of its CPU profile.
func (w *connWorkload) measureWithCollector(b *testing.B, s *sink, bin, profile string) rxWindows {
	col := startBinary(b, bin, "../../testdata/perf/receiver.yaml", map[string]string{
		"FLOWATTR_PERF_SINK_PORT": strconv.Itoa(s.port),
		"FLOWATTR_PERF_RX_NET":    rxNet.String(),
		"FLOWATTR_PERF_RX_CLIENT": rxClient.String(),
		"FLOWATTR_PERF_RX_SERVER": rxServer.String(),
	})
	flows0 := s.flows.Load()
	m := w.measure(b, col, profile)
	// Wait until the records stop arriving, or all have.
	got := func() int64 { return s.flows.Load() - flows0 }
	for last, since := got(), time.Now(); got() < m.expected && time.Since(since) < rxSettle; {
		time.Sleep(100 * time.Millisecond)
		if n := got(); n != last {
			last, since = n, time.Now()
		}
	}
	m.lost = max(m.expected-got(), 0)
	metrics := col.Metrics(b, loopback(col.metricsPort))
	for _, name := range []string{
		"otelcol_ebpfflow_kernel_events_lost", "otelcol_ebpfflow_kernel_birth_map_full",
		"otelcol_ebpfflow_kernel_recursion_misses", "otelcol_ebpfflow_queue_dropped",
	} {
		m.drops += int64(collectortest.MetricSum(metrics, name))
	}
	col.Stop(b)
	if n := s.failures.Load(); n > 0 {
		b.Fatalf("sink could not parse %d requests", n)
	}
	return m
}
