// Package collectortest runs the built otelcol-flowattr binary for the
// end-to-end test packages (test/e2e, test/fleet, test/perf): it finds the
// binary, starts the collector as a separate process, waits for its
// health_check extension, reads its HTTP endpoints and stops it, and it
// serves an OTLP/gRPC logs sink for the collector to export to.
package collectortest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BinaryEnv names the variable that points the tests at the collector
// binary; `make test` builds bin/otelcol-flowattr and sets it.
const BinaryEnv = "FLOWATTR_COLLECTOR_BIN"

const (
	// ReadyTimeout bounds the wait for health_check to report the
	// pipelines running.
	ReadyTimeout = 60 * time.Second
	// ShutdownTimeout bounds the wait for a clean exit after SIGTERM.
	ShutdownTimeout = 30 * time.Second
)

// Binary returns the path of the binary under test. Outside CI a plain
// `go test ./...` skips the tests that need it; in CI a missing binary is a
// failure, so that the tests cannot silently stop running.
func Binary(tb testing.TB) string {
	tb.Helper()
	path := os.Getenv(BinaryEnv)
	if path == "" {
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s is not set: run the tests with `make test`, which builds bin/otelcol-flowattr and sets it", BinaryEnv)
		}
		tb.Skipf("%s is not set; `make test` builds the collector and sets it", BinaryEnv)
	}
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatalf("collector binary %s=%s: %v (build it with `make build`)", BinaryEnv, path, err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		tb.Fatalf("collector binary %s=%s is not an executable file", BinaryEnv, path)
	}
	return path
}

// FreePort returns a loopback TCP port that was free a moment ago, for
// listeners that the collector opens itself.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// DialFunc opens a connection, as net.Dialer.DialContext does.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Options says how to run a collector.
type Options struct {
	// Name tells collectors apart in messages; empty for a lone collector.
	Name string
	// Binary is the collector binary to run instead of Binary's, such as
	// an earlier build to compare with.
	Binary string
	// Configs are passed as --config flags, in order, made absolute.
	Configs []string
	// Env is added to the test's environment.
	Env map[string]string
	// Wrapper is a command the binary runs under, such as
	// `ip netns exec NS` or `taskset --cpu-list 1`. It must exec the binary,
	// so that the process signalled and measured is the collector itself.
	Wrapper []string
	// Dial reaches the collector's HTTP endpoints (health_check, metrics,
	// pprof); nil dials from the test's own network namespace. A collector
	// run inside a network namespace needs a Dial from inside it.
	Dial DialFunc
}

// Collector is a running otelcol-flowattr process.
type Collector struct {
	label  string // "collector" or "collector <name>", for messages
	cmd    *exec.Cmd
	output *lockedBuffer
	exited chan struct{} // closed when the process has exited
	err    error         // the process's exit error, set before exited closes
	client *http.Client
}

// Start runs the binary as opts says. The process is killed when the test
// ends if it is still running; its output is logged if the test failed.
func Start(tb testing.TB, opts Options) *Collector {
	tb.Helper()
	bin := opts.Binary
	if bin == "" {
		bin = Binary(tb)
	}
	args := append([]string(nil), opts.Wrapper...)
	args = append(args, bin)
	for _, config := range opts.Configs {
		abs, err := filepath.Abs(config)
		if err != nil {
			tb.Fatal(err)
		}
		args = append(args, "--config="+abs)
	}
	dial := opts.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	c := &Collector{
		label:  "collector",
		output: &lockedBuffer{},
		exited: make(chan struct{}),
		// Without keep-alives every request dials anew, through Dial.
		client: &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}},
	}
	if opts.Name != "" {
		c.label += " " + opts.Name
	}
	c.cmd = exec.Command(args[0], args[1:]...)
	c.cmd.Env = os.Environ()
	for k, v := range opts.Env {
		c.cmd.Env = append(c.cmd.Env, k+"="+v)
	}
	c.cmd.Stdout = c.output
	c.cmd.Stderr = c.output
	if err := c.cmd.Start(); err != nil {
		tb.Fatalf("starting %s (%s): %v", c.label, bin, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	tb.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
		if tb.Failed() {
			tb.Logf("%s output:\n%s", c.label, c.output.String())
		}
	})
	return c
}

// Pid is the collector's process id.
func (c *Collector) Pid() int { return c.cmd.Process.Pid }

// Output is what the collector has written so far to its standard output
// and standard error together: its log, in the collector's console format.
func (c *Collector) Output() string { return c.output.String() }

// WaitReady polls the health_check extension at healthAddr (host:port) until
// the collector reports that its pipelines are running, failing early if the
// process exits.
func (c *Collector) WaitReady(tb testing.TB, healthAddr string) {
	tb.Helper()
	deadline := time.Now().Add(ReadyTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.Get(ctx, healthAddr, "/")
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s not ready after %s at %s (last: %v)", c.label, ReadyTimeout, healthAddr, err)
		}
		select {
		case <-c.exited:
			tb.Fatalf("%s exited before it was ready: %v", c.label, c.err)
		case <-tick.C:
		}
	}
}

// Stop sends SIGTERM and requires the collector to shut down cleanly with
// exit status 0 within ShutdownTimeout.
func (c *Collector) Stop(tb testing.TB) {
	tb.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		tb.Fatalf("signalling %s: %v", c.label, err)
	}
	select {
	case <-c.exited:
	case <-time.After(ShutdownTimeout):
		tb.Fatalf("%s still running %s after SIGTERM", c.label, ShutdownTimeout)
	}
	if c.err != nil {
		tb.Fatalf("%s did not exit cleanly: %v", c.label, c.err)
	}
}

// Kill sends SIGKILL, as the kernel's OOM killer or a crash ends the
// collector: nothing is flushed. It returns once the process has exited.
func (c *Collector) Kill(tb testing.TB) {
	tb.Helper()
	if err := c.cmd.Process.Kill(); err != nil {
		tb.Fatalf("killing %s: %v", c.label, err)
	}
	select {
	case <-c.exited:
	case <-time.After(ShutdownTimeout):
		tb.Fatalf("%s still running %s after SIGKILL", c.label, ShutdownTimeout)
	}
}

// Get fetches path from one of the collector's HTTP endpoints at addr
// (host:port); a status other than 200 is an error.
func (c *Collector) Get(ctx context.Context, addr, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s%s: %s", addr, path, resp.Status)
	}
	return body.String(), nil
}

// metricsTimeout bounds one scrape of the collector's own metrics.
const metricsTimeout = 10 * time.Second

// Metrics fetches the collector's own Prometheus metrics from the endpoint
// at addr (host:port), failing the test if it cannot.
func (c *Collector) Metrics(tb testing.TB, addr string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), metricsTimeout)
	defer cancel()
	body, err := c.Get(ctx, addr, "/metrics")
	if err != nil {
		tb.Fatalf("metrics of %s: %v", c.label, err)
	}
	return body
}

// lockedBuffer collects the collector's output, written by the exec
// package's copying goroutines and read by the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
