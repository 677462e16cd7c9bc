// Package fleet runs several otelcol-flowattr processes as a fleet: node
// collectors in network namespaces that stand for hosts, exchanging
// heartbeats over mutual TLS, and gateways sharing heartbeats through Kafka.
// Every record they emit is checked against the test's own ground truth.
package fleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binaryEnv names the variable pointing at the collector binary; `make test`
// builds bin/otelcol-flowattr and sets it (the same contract as test/e2e).
const binaryEnv = "FLOWATTR_COLLECTOR_BIN"

const (
	readyTimeout    = 60 * time.Second
	shutdownTimeout = 30 * time.Second
)

// collectorBinary returns the binary under test; in CI a missing binary fails
// rather than skips, so the tests cannot silently stop running.
func collectorBinary(t *testing.T) string {
	t.Helper()
	path := os.Getenv(binaryEnv)
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set: run the tests with `make test`, which builds bin/otelcol-flowattr and sets it", binaryEnv)
		}
		t.Skipf("%s is not set; `make test` builds the collector and sets it", binaryEnv)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("collector binary %s=%s: %v (build it with `make build`)", binaryEnv, path, err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("collector binary %s=%s is not an executable file", binaryEnv, path)
	}
	return path
}

// configPath returns the absolute path of a file under testdata/fleet.
func configPath(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "testdata", "fleet", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// lockedBuffer collects a process's output for the test to read.
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

// collector is one running otelcol-flowattr process.
type collector struct {
	name   string
	cmd    *exec.Cmd
	output *lockedBuffer
	exited chan struct{}
	err    error // set before exited closes
	// dial reaches the collector's health and metrics endpoints, which are
	// inside its network namespace.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// collectorSpec says how to run a collector.
type collectorSpec struct {
	name    string
	netns   string // empty: the test's own namespace
	configs []string
	env     map[string]string
}

// startCollector runs the binary; it is killed when the test ends if it is
// still running, and its output is logged when the test failed.
func startCollector(t *testing.T, spec collectorSpec) *collector {
	t.Helper()
	bin := collectorBinary(t)
	args := []string{bin}
	for _, c := range spec.configs {
		args = append(args, "--config="+c)
	}
	if spec.netns != "" {
		// ip netns exec execs the binary, so the process is the collector.
		args = append([]string{"ip", "netns", "exec", spec.netns}, args...)
	}
	c := &collector{name: spec.name, output: &lockedBuffer{}, exited: make(chan struct{})}
	c.dial = (&net.Dialer{}).DialContext
	if spec.netns != "" {
		c.dial = netnsDialer(spec.netns, netip.Addr{})
	}
	c.cmd = exec.Command(args[0], args[1:]...)
	c.cmd.Env = os.Environ()
	for k, v := range spec.env {
		c.cmd.Env = append(c.cmd.Env, k+"="+v)
	}
	c.cmd.Stdout = c.output
	c.cmd.Stderr = c.output
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting collector %s: %v", spec.name, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
		if t.Failed() {
			t.Logf("collector %s output:\n%s", c.name, c.output.String())
		}
	})
	return c
}

func (c *collector) httpClient() *http.Client {
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: c.dial, DisableKeepAlives: true}}
}

// waitReady polls the health_check extension until the pipelines run.
func (c *collector) waitReady(t *testing.T, healthAddr string) {
	t.Helper()
	client := c.httpClient()
	url := "http://" + healthAddr + "/"
	deadline := time.Now().Add(readyTimeout)
	var last error
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = errors.New(resp.Status)
		}
		last = err
		select {
		case <-c.exited:
			t.Fatalf("collector %s exited before it was ready: %v\n%s", c.name, c.err, c.output.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("collector %s not ready after %s at %s (last: %v)", c.name, readyTimeout, url, last)
}

// stop sends SIGTERM and requires a clean exit.
func (c *collector) stop(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signalling collector %s: %v", c.name, err)
	}
	select {
	case <-c.exited:
	case <-time.After(shutdownTimeout):
		t.Fatalf("collector %s still running %s after SIGTERM", c.name, shutdownTimeout)
	}
	if c.err != nil {
		t.Fatalf("collector %s did not exit cleanly: %v\n%s", c.name, c.err, c.output.String())
	}
}

// metrics fetches the collector's own Prometheus metrics.
func (c *collector) metrics(t *testing.T, addr string) string {
	t.Helper()
	resp, err := c.httpClient().Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", c.name, err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return body.String()
}

// metricSum adds up the samples of a counter whose labels include every
// name="value" pair in labels.
func metricSum(metrics, name string, labels ...string) float64 {
	sample := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(?:_total)?\{([^}]*)\} (\S+)$`)
	var sum float64
outer:
	for _, m := range sample.FindAllStringSubmatch(metrics, -1) {
		for i := 0; i+1 < len(labels); i += 2 {
			if !regexp.MustCompile(`(^|,)` + regexp.QuoteMeta(labels[i]) + `="` + regexp.QuoteMeta(labels[i+1]) + `"`).MatchString(m[1]) {
				continue outer
			}
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// freeLoopbackPort returns a loopback TCP port that was free a moment ago.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// eventually polls cond every interval until it holds or timeout passes.
func eventually(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

func must(t *testing.T, err error, what string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(what, args...), err)
	}
}
