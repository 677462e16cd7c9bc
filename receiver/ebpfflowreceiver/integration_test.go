//go:build linux

package ebpfflowreceiver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/receiver"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/metadatatest"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/tracer"
)

// Addresses in 127.0.0.0/8 (all loopback on Linux) that no other test uses,
// so that the include filter keeps only this test's flows.
const (
	itServer = "127.77.0.1"
	itClient = "127.77.0.2"
	itIdle   = "127.77.0.3"
	itNet    = "127.77.0.0/24"

	// Payloads are not multiples of any segment size.
	itClientPayload = 123456
	itServerPayload = 789
)

// requireTracer skips t, saying why, where the eBPF tracer cannot load: in
// -short mode, or without root (or CAP_BPF and CAP_PERFMON) and kernel BTF.
func requireTracer(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("loads eBPF programs; skipped in -short mode")
	}
	probe, err := tracer.New(tracer.Options{})
	if errors.Is(err, tracer.ErrUnsupported) {
		t.Skipf("SKIPPED, NOT PASSED: the eBPF tracer cannot run here: %v", err)
	}
	require.NoError(t, err)
	require.NoError(t, probe.Close())
}

// startReceiver creates and starts a receiver on cfg and returns it with
// the sink its records go to.
func startReceiver(t *testing.T, cfg *Config) (receiver.Logs, *consumertest.LogsSink) {
	t.Helper()
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	sink := new(consumertest.LogsSink)
	rcv, err := NewFactory().CreateLogs(context.Background(), metadatatest.NewSettings(tel), cfg, sink)
	require.NoError(t, err)
	require.NoError(t, rcv.Start(context.Background(), componenttest.NewNopHost()))
	return rcv, sink
}

// TestIntegrationKernel runs the receiver with the real eBPF tracer and
// checks the records of real loopback connections. It needs root (or CAP_BPF
// and CAP_PERFMON) and kernel BTF; without them it skips and says why.
func TestIntegrationKernel(t *testing.T) {
	requireTracer(t)

	cfg := createDefaultConfig()
	cfg.FlushInterval = 50 * time.Millisecond
	cfg.ClaimInterval = time.Second
	cfg.ActiveInterval = time.Second
	cfg.Sender = "it-node"
	cfg.Filter.ExcludeLoopback = false
	cfg.Filter.IncludeCIDRs = []string{itNet}
	cfg.Ownership.Static.Entries = []owners.Entry{
		{Prefixes: []string{itServer}, ID: "server-owner", Attributes: map[string]string{"service.name": "srv"}},
		{Prefixes: []string{itClient}, ID: "client-owner"},
		{Prefixes: []string{itIdle}, ID: "idle-owner"},
	}
	require.NoError(t, cfg.Validate())

	rcv, sink := startReceiver(t, cfg)
	stopped := false
	defer func() {
		if !stopped {
			require.NoError(t, rcv.Shutdown(context.Background()))
		}
	}()

	ln, err := net.Listen("tcp4", itServer+":0")
	require.NoError(t, err)
	defer ln.Close()
	serverPort := uint16(ln.Addr().(*net.TCPAddr).Port)

	// The server reads the client's payload to EOF, answers, and closes;
	// a second, long-lived connection stays open until the end.
	var served sync.WaitGroup
	served.Add(2)
	go func() {
		for range 2 {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer served.Done()
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				if n == itClientPayload {
					_, _ = c.Write(make([]byte, itServerPayload))
				}
			}()
		}
	}()
	dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(itClient)}}
	serverAddr := netip.AddrPortFrom(netip.MustParseAddr(itServer), serverPort).String()

	start := time.Now()
	conn, err := dialer.Dial("tcp4", serverAddr)
	require.NoError(t, err)
	clientPort := uint16(conn.LocalAddr().(*net.TCPAddr).Port)
	_, err = conn.Write(make([]byte, itClientPayload))
	require.NoError(t, err)
	require.NoError(t, conn.(*net.TCPConn).CloseWrite())
	got, err := io.Copy(io.Discard, conn)
	require.NoError(t, err)
	require.Equal(t, int64(itServerPayload), got)
	require.NoError(t, conn.Close())

	longLived, err := dialer.Dial("tcp4", serverAddr)
	require.NoError(t, err)
	longLivedPort := uint16(longLived.LocalAddr().(*net.TCPAddr).Port)
	_, err = longLived.Write([]byte("hello"))
	require.NoError(t, err)

	// A refused connect: nothing listens on the closed listener's port.
	closedLn, err := net.Listen("tcp4", itServer+":0")
	require.NoError(t, err)
	refusedAddr := closedLn.Addr().String()
	refusedPort := uint16(closedLn.Addr().(*net.TCPAddr).Port)
	require.NoError(t, closedLn.Close())
	_, err = dialer.Dial("tcp4", refusedAddr)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)

	find := func(match func(plog.LogRecord) bool) (plog.LogRecord, bool) {
		for _, lr := range records(sink) {
			if match(lr) {
				return lr, true
			}
		}
		return plog.LogRecord{}, false
	}
	// flowMatch matches a flow record; localPort 0 matches any.
	flowMatch := func(state, role string, localPort, peerPort uint16) func(plog.LogRecord) bool {
		return func(lr plog.LogRecord) bool {
			a := lr.Attributes().AsRaw()
			return lr.EventName() == flowschema.EventFlow && a[flowschema.AttrFlowState] == state &&
				a[flowschema.AttrFlowRole] == role &&
				(localPort == 0 || a[flowschema.AttrNetworkLocalPort] == int64(localPort)) && a[flowschema.AttrNetworkPeerPort] == int64(peerPort)
		}
	}
	claimMatch := func(addr, owner string) func(plog.LogRecord) bool {
		return func(lr plog.LogRecord) bool {
			c, err := flowschema.ParseClaim(lr)
			return err == nil && c.Address.String() == addr && c.Owner.ID == owner
		}
	}
	waitFor := func(what string, match func(plog.LogRecord) bool) plog.LogRecord {
		t.Helper()
		var lr plog.LogRecord
		require.Eventually(t, func() bool {
			var ok bool
			lr, ok = find(match)
			return ok
		}, 20*time.Second, 20*time.Millisecond, "no %s record; flows seen: %v", what, flowSummary(records(sink)))
		return lr
	}

	clientRec := waitFor("client close", flowMatch("closed", "client", clientPort, serverPort))
	serverRec := waitFor("server close", flowMatch("closed", "server", serverPort, clientPort))
	failedRec := waitFor("failed connect", flowMatch("failed", "client", 0, refusedPort))
	activeRec := waitFor("active", flowMatch("active", "client", longLivedPort, serverPort))
	idleClaim := waitFor("idle owner claim", claimMatch(itIdle, "idle-owner"))
	serverClaim := waitFor("server owner claim", claimMatch(itServer, "server-owner"))
	waitFor("client owner claim", claimMatch(itClient, "client-owner"))
	end := time.Now()

	// The closed connection, from the client's side.
	ca := clientRec.Attributes().AsRaw()
	assert.Equal(t, itClient, ca[flowschema.AttrNetworkLocalAddress])
	assert.Equal(t, itServer, ca[flowschema.AttrNetworkPeerAddress])
	assert.Equal(t, itClient, ca[flowschema.AttrClientAddress])
	assert.Equal(t, int64(clientPort), ca[flowschema.AttrClientPort])
	assert.Equal(t, itServer, ca[flowschema.AttrServerAddress])
	assert.Equal(t, int64(serverPort), ca[flowschema.AttrServerPort])
	assert.Equal(t, "tcp", ca[flowschema.AttrNetworkTransport])
	assert.Equal(t, "ipv4", ca[flowschema.AttrNetworkType])
	assert.Equal(t, int64(itClientPayload), ca[flowschema.AttrFlowBytesSent], "payload bytes exactly")
	assert.Equal(t, int64(itServerPayload), ca[flowschema.AttrFlowBytesReceived])
	assert.Equal(t, int64(os.Getpid()), ca[flowschema.AttrProcessPID])
	// The kernel cuts the task's comm to 15 bytes: the test binary's name
	// starts with what it reports.
	comm, _ := ca[flowschema.AttrProcessExecutableName].(string)
	assert.NotEmpty(t, comm)
	assert.True(t, strings.HasPrefix(filepath.Base(os.Args[0]), comm), "comm %q is not a prefix of %q", comm, filepath.Base(os.Args[0]))
	assert.Equal(t, "client-owner", ca["flowattr.local.owner.id"])
	assert.NotContains(t, ca, flowschema.AttrFlowError)
	flowStart := time.Unix(0, ca[flowschema.AttrFlowStartTime].(int64))
	assert.False(t, flowStart.Before(start.Add(-time.Second)), "start %v before the test's %v", flowStart, start)
	assert.False(t, clientRec.Timestamp().AsTime().Before(flowStart), "close before start")
	assert.False(t, clientRec.Timestamp().AsTime().After(end))

	// The same connection from the server's side.
	sa := serverRec.Attributes().AsRaw()
	assert.Equal(t, int64(itServerPayload), sa[flowschema.AttrFlowBytesSent])
	assert.Equal(t, int64(itClientPayload), sa[flowschema.AttrFlowBytesReceived])
	assert.Equal(t, itClient, sa[flowschema.AttrClientAddress])
	assert.Equal(t, itServer, sa[flowschema.AttrServerAddress])
	assert.Equal(t, "server-owner", sa["flowattr.local.owner.id"])
	assert.Equal(t, "srv", sa["flowattr.local.owner.service.name"])

	assert.Equal(t, "ECONNREFUSED", failedRec.Attributes().AsRaw()[flowschema.AttrFlowError])
	assert.Equal(t, int64(5), activeRec.Attributes().AsRaw()[flowschema.AttrFlowBytesSent], "interim record of the open connection")

	// Claims: the idle address is claimed without traffic; claims
	// come from the configured source and lie within the test.
	for _, lr := range []plog.LogRecord{idleClaim, serverClaim} {
		c, err := flowschema.ParseClaim(lr)
		require.NoError(t, err)
		assert.Equal(t, "it-node", c.Sender)
		assert.False(t, c.Start.After(c.End))
		assert.False(t, c.End.After(end))
	}

	require.NoError(t, longLived.Close())
	ln.Close()
	served.Wait()
	require.NoError(t, rcv.Shutdown(context.Background()))
	stopped = true
	// Shutdown claims the last partial interval, so there are at least two.
	assertClaimsTouch(t, records(sink), itIdle)
}

// assertClaimsTouch checks that the periodic claims of addr form one
// continuous range: each starts where the previous ended.
func assertClaimsTouch(t *testing.T, recs []plog.LogRecord, addr string) {
	t.Helper()
	var claims []flowschema.Claim
	for _, lr := range recs {
		if c, err := flowschema.ParseClaim(lr); err == nil && c.Address.String() == addr {
			claims = append(claims, c)
		}
	}
	require.GreaterOrEqual(t, len(claims), 2, "want consecutive claims of %s", addr)
	for i := 1; i < len(claims); i++ {
		assert.True(t, claims[i].Start.Equal(claims[i-1].End), "claim %d of %s starts at %v, previous ended at %v", i, addr, claims[i].Start, claims[i-1].End)
	}
}

func flowSummary(recs []plog.LogRecord) []string {
	var out []string
	for _, lr := range recs {
		if lr.EventName() == flowschema.EventFlow {
			a := lr.Attributes().AsRaw()
			out = append(out, fmt.Sprintf("%v %v %v:%v->%v:%v", a[flowschema.AttrFlowState], a[flowschema.AttrFlowRole],
				a[flowschema.AttrNetworkLocalAddress], a[flowschema.AttrNetworkLocalPort], a[flowschema.AttrNetworkPeerAddress], a[flowschema.AttrNetworkPeerPort]))
		}
	}
	return out
}

// TestShutdownHandsOverEventsInRing closes connections and shuts the
// receiver down as soon as the kernel has closed them, before the reader's
// next periodic wakeup: their events are still in the ring, and every one
// must become a record.
func TestShutdownHandsOverEventsInRing(t *testing.T) {
	requireTracer(t)

	const server, client, n = "127.78.0.1", "127.78.0.2", 50
	cfg := createDefaultConfig()
	cfg.ActiveInterval = 0
	cfg.Filter.ExcludeLoopback = false
	cfg.Filter.IncludeCIDRs = []string{"127.78.0.0/24"}
	rcv, sink := startReceiver(t, cfg)

	ln, err := net.Listen("tcp4", server+":0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(client)}}
	for range n {
		c, err := dialer.Dial("tcp4", ln.Addr().String())
		require.NoError(t, err)
		_, _ = c.Read(make([]byte, 1)) // the server's close
		require.NoError(t, c.Close())
	}
	// The client side closes when the server's last ACK arrives, just after
	// Close returns: wait for the kernel to have closed every connection
	// (each side closed or in TIME_WAIT), not for the reader.
	require.Eventually(t, func() bool { return openSockets(t, "004E7F") == 0 }, 5*time.Second, time.Millisecond)
	require.NoError(t, rcv.Shutdown(context.Background()))

	flows, _ := split(records(sink))
	assert.Len(t, flows, 2*n, "a record for each side of each closed connection")
}

// openSockets counts the IPv4 TCP sockets of /proc/net/tcp, other than
// listeners and those in TIME_WAIT, with an address whose hex form (as the
// file writes it, little-endian) ends in suffix.
func openSockets(t *testing.T, suffix string) int {
	data, err := os.ReadFile("/proc/net/tcp")
	require.NoError(t, err)
	n := 0
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] == "06" || f[3] == "0A" { // TIME_WAIT, LISTEN
			continue
		}
		if strings.HasSuffix(strings.Split(f[1], ":")[0], suffix) || strings.HasSuffix(strings.Split(f[2], ":")[0], suffix) {
			n++
		}
	}
	return n
}
