// Package e2e runs the built otelcol-flowattr binary as a separate process
// and talks to it only over the network, as a user's pipeline would.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binaryEnv names the variable that points the tests at the collector binary;
// `make test` builds bin/otelcol-flowattr and sets it.
const binaryEnv = "FLOWATTR_COLLECTOR_BIN"

const (
	readyTimeout    = 60 * time.Second
	shutdownTimeout = 30 * time.Second
)

// collectorBinary returns the path of the binary under test. Outside CI a
// plain `go test ./...` skips the end-to-end tests; in CI a missing binary is
// a failure, so that the tests cannot silently stop running.
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

// freePort returns a loopback TCP port that was free a moment ago, for
// listeners that the collector opens itself.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// lockedBuffer collects the collector's output, written by the exec package's
// copying goroutines and read by the test.
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

// collector is a running otelcol-flowattr process.
type collector struct {
	cmd    *exec.Cmd
	output *lockedBuffer
	exited chan struct{} // closed when the process has exited
	err    error         // the process's exit error, set before exited closes
}

// startCollector runs the binary on configPath with env added to the test's
// environment. The process is killed when the test ends if it is still
// running; its output is logged if the test failed.
func startCollector(t *testing.T, configPath string, env map[string]string) *collector {
	t.Helper()
	bin := collectorBinary(t)
	abs, err := filepath.Abs(configPath)
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{output: &lockedBuffer{}, exited: make(chan struct{})}
	c.cmd = exec.Command(bin, "--config="+abs)
	c.cmd.Env = os.Environ()
	for k, v := range env {
		c.cmd.Env = append(c.cmd.Env, k+"="+v)
	}
	c.cmd.Stdout = c.output
	c.cmd.Stderr = c.output
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
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
			t.Logf("collector output:\n%s", c.output.String())
		}
	})
	return c
}

// waitReady polls the health_check extension until the collector reports
// that its pipelines are running, failing early if the process exits.
func (c *collector) waitReady(t *testing.T, healthPort int) {
	t.Helper()
	url := "http://127.0.0.1:" + strconv.Itoa(healthPort) + "/"
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("collector not ready after %s at %s (last: %v)", readyTimeout, url, describe(resp, err))
		}
		select {
		case <-c.exited:
			t.Fatalf("collector exited before it was ready: %v", c.err)
		case <-tick.C:
		}
	}
}

func describe(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return resp.Status
}

// stop sends SIGTERM and requires the collector to shut down cleanly with
// exit status 0 within shutdownTimeout.
func (c *collector) stop(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signalling the collector: %v", err)
	}
	select {
	case <-c.exited:
	case <-time.After(shutdownTimeout):
		t.Fatalf("collector still running %s after SIGTERM", shutdownTimeout)
	}
	if c.err != nil {
		t.Fatalf("collector did not exit cleanly: %v", c.err)
	}
}

// scrapeMetrics fetches the collector's own Prometheus metrics.
func scrapeMetrics(ctx context.Context, port int) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/metrics", port), nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", errors.New("metrics endpoint: " + resp.Status)
	}
	return body.String(), nil
}
