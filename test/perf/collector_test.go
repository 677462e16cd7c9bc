//go:build linux

// Package perf measures the built otelcol-flowattr binary end to end: flow
// throughput and CPU per record with and without the ownership processor
// (BenchmarkPipeline), resident memory against the number of tracked
// addresses (BenchmarkMemory), fresh flows held until their peers'
// claims (BenchmarkHolding), and what the ebpfflow receiver costs a host
// making short connections (BenchmarkReceiver, root only). One test,
// TestFloodMemory, runs with the other tests (`make test`): it requires
// max_keys to bound the collector's peak memory under a flood of claims
// for distinct addresses and owners. The collector runs as a separate
// process and, but for BenchmarkReceiver's eBPF receiver, is driven only
// over OTLP/gRPC on loopback; see docs/performance.md. Its CPU time and
// memory are read from /proc, so the package builds on Linux only.
//
//	FLOWATTR_COLLECTOR_BIN=$PWD/bin/otelcol-flowattr go test -run '^$' -bench . ./test/perf/
//	FLOWATTR_COLLECTOR_BIN=$PWD/bin/otelcol-flowattr go test -run TestFloodMemory -v ./test/perf/
package perf

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flowattr/flowattr/test/internal/collectortest"
)

// collectorCPUsEnv names a CPU list (taskset's syntax, e.g. "1") that, when
// set, confines the collector to those CPUs, so that it does not share them
// with the load generator and sink (run the benchmark itself under
// `taskset --cpu-list 0`).
const collectorCPUsEnv = "FLOWATTR_PERF_COLLECTOR_CPUS"

// collector is a running otelcol-flowattr process and the loopback ports its
// configuration was given.
type collector struct {
	*collectortest.Collector

	otlpPort, healthPort, metricsPort, pprofPort int
	// prometheusPort is for a prometheus exporter of the collector's
	// pipelines, apart from its own metrics at metricsPort.
	prometheusPort int
}

// startCollector runs the binary on configPath, with overlays laid over it
// in order, with free ports in the FLOWATTR_PERF_* variables, plus
// extraEnv, and waits until health_check reports it ready.
func startCollector(tb testing.TB, configPath string, extraEnv map[string]string, overlays ...string) *collector {
	tb.Helper()
	return startBinary(tb, "", configPath, extraEnv, overlays...)
}

// startBinary is startCollector with the collector binary bin, Binary's
// when empty.
func startBinary(tb testing.TB, bin, configPath string, extraEnv map[string]string, overlays ...string) *collector {
	tb.Helper()
	c := &collector{
		otlpPort:    collectortest.FreePort(tb),
		healthPort:  collectortest.FreePort(tb),
		metricsPort: collectortest.FreePort(tb),
		pprofPort:   collectortest.FreePort(tb),

		prometheusPort: collectortest.FreePort(tb),
	}
	env := map[string]string{
		"FLOWATTR_PERF_OTLP_PORT":    strconv.Itoa(c.otlpPort),
		"FLOWATTR_PERF_HEALTH_PORT":  strconv.Itoa(c.healthPort),
		"FLOWATTR_PERF_METRICS_PORT": strconv.Itoa(c.metricsPort),
		"FLOWATTR_PERF_PPROF_PORT":   strconv.Itoa(c.pprofPort),

		"FLOWATTR_PERF_PROMETHEUS_PORT": strconv.Itoa(c.prometheusPort),
	}
	maps.Copy(env, extraEnv)
	opts := collectortest.Options{Binary: bin, Configs: append([]string{configPath}, overlays...), Env: env}
	if cpus := os.Getenv(collectorCPUsEnv); cpus != "" {
		// taskset runs the collector on those CPUs only; the Go runtime
		// sizes GOMAXPROCS from that affinity.
		opts.Wrapper = []string{"taskset", "--cpu-list", cpus}
	}
	c.Collector = collectortest.Start(tb, opts)
	c.WaitReady(tb, loopback(c.healthPort))
	return c
}

func loopback(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// clockTicks is the kernel's USER_HZ, the unit of utime and stime in
// /proc/<pid>/stat: 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuTime returns the CPU time (user + system) the collector has used so far,
// from /proc/<pid>/stat; its resolution is 10ms.
func (c *collector) cpuTime(tb testing.TB) time.Duration {
	tb.Helper()
	user, system := c.cpuTimes(tb)
	return user + system
}

// cpuTimes is cpuTime's user and system parts.
func (c *collector) cpuTimes(tb testing.TB) (user, system time.Duration) {
	tb.Helper()
	return processCPU(tb, strconv.Itoa(c.Pid()))
}

// selfCPU is the CPU time of the benchmark process: load generator and sink.
func selfCPU(tb testing.TB) time.Duration {
	tb.Helper()
	user, system := processCPU(tb, "self")
	return user + system
}

func processCPU(tb testing.TB, pid string) (user, system time.Duration) {
	tb.Helper()
	path := "/proc/" + pid + "/stat"
	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("reading CPU time: %v", err)
	}
	user, system, err = parseStatCPU(string(raw))
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return user, system
}

// machineIdle returns the idle time of all CPUs so far, from the first line
// of /proc/stat: whether the machine had CPU to spare during a measurement.
func machineIdle(tb testing.TB) time.Duration {
	tb.Helper()
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		tb.Fatalf("reading /proc/stat: %v", err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	fields := strings.Fields(line)
	// cpu user nice system idle ...
	if len(fields) < 5 || fields[0] != "cpu" {
		tb.Fatalf("/proc/stat starts with %q", line)
	}
	ticks, err := strconv.ParseInt(fields[4], 10, 64)
	if err != nil {
		tb.Fatalf("/proc/stat idle: %v", err)
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// parseStatCPU returns utime and stime from the text of /proc/<pid>/stat. The
// command name (field 2) is in parentheses and may contain spaces, so fields
// are counted after its closing parenthesis: utime and stime are fields 14
// and 15.
func parseStatCPU(stat string) (user, system time.Duration, err error) {
	end := strings.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, 0, fmt.Errorf("no command name in %q", stat)
	}
	fields := strings.Fields(stat[end+1:])
	// fields[0] is field 3 (state).
	const utime, stime = 14 - 3, 15 - 3
	if len(fields) <= stime {
		return 0, 0, fmt.Errorf("only %d fields after the command name", len(fields))
	}
	var ticks [2]int64
	for j, i := range []int{utime, stime} {
		if ticks[j], err = strconv.ParseInt(fields[i], 10, 64); err != nil {
			return 0, 0, fmt.Errorf("field %d: %w", i+3, err)
		}
	}
	return time.Duration(ticks[0]) * time.Second / clockTicks, time.Duration(ticks[1]) * time.Second / clockTicks, nil
}

// memory is the collector's resident memory from /proc/<pid>/status.
type memory struct {
	rss, hwm int64 // VmRSS and VmHWM (peak RSS), bytes
}

func (c *collector) memory(tb testing.TB) memory {
	tb.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Pid()))
	if err != nil {
		tb.Fatalf("reading the collector's memory: %v", err)
	}
	var m memory
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch name {
		case "VmRSS":
			dst = &m.rss
		case "VmHWM":
			dst = &m.hwm
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			tb.Fatalf("/proc/%d/status %s: %v", c.Pid(), name, err)
		}
		*dst = kb << 10
	}
	if m.rss == 0 || m.hwm == 0 {
		tb.Fatalf("/proc/%d/status has no VmRSS or VmHWM", c.Pid())
	}
	return m
}

// metric returns the value of the collector's own Prometheus metric name
// (the first sample whose line starts with name, labels ignored), and whether
// it was exposed.
func (c *collector) metric(ctx context.Context, name string) (float64, bool, error) {
	body, err := c.Get(ctx, loopback(c.metricsPort), "/metrics")
	if err != nil {
		return 0, false, err
	}
	return promValue(body, name)
}

// promValue finds the first sample of metric name in a Prometheus text
// exposition.
func promValue(body, name string) (float64, bool, error) {
	for line := range strings.Lines(body) {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		if rest[0] == '{' {
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				return 0, false, fmt.Errorf("unterminated labels in %q", line)
			}
			rest = rest[end+1:]
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err != nil {
			return 0, false, fmt.Errorf("metric %s: %w", name, err)
		}
		return v, true, nil
	}
	return 0, false, nil
}
