// Package fleet runs several otelcol-flowattr processes as a fleet: node
// collectors in network namespaces that stand for hosts, exchanging
// claims over mutual TLS, and gateways sharing claims through Kafka.
// Every record they emit is checked against the test's own ground truth.
package fleet

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// configPath returns the absolute path of a file under testdata/fleet.
func configPath(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "testdata", "fleet", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// loopbackAddr is host:port of a port on 127.0.0.1.
func loopbackAddr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

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

// retryLog is what the exporter helper logs when a request failed and will
// be retried.
const retryLog = "Exporting failed. Will retry the request after interval."

// firstLine returns the first line of log that contains every one of subs,
// or "".
func firstLine(log string, subs ...string) string {
outer:
	for line := range strings.Lines(log) {
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue outer
			}
		}
		return strings.TrimSpace(line)
	}
	return ""
}
