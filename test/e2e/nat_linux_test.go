package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/test/internal/collectortest"
)

// The addresses of testdata/e2e-nat.yaml: a client pod and a backend pod,
// each in a network namespace of its own, routed through a node namespace
// that DNATs the service address to the backend.
var (
	natClient  = netip.MustParseAddr("10.203.1.2")
	natNodeC   = netip.MustParseAddr("10.203.1.1") // the node, on the client's link
	natNodeS   = netip.MustParseAddr("10.203.2.1") // the node, on the backend's link
	natBackend = netip.MustParseAddrPort("10.203.2.2:8080")
	natService = netip.MustParseAddrPort("10.96.203.10:80")
)

// natTopology holds the names of the test's three network namespaces.
type natTopology struct{ node, client, server string }

// newNATTopology creates the namespaces, links and the DNAT rule (nft, in
// the node namespace, at prerouting as kube-proxy's); all are deleted when
// the test ends. Nothing is routed outside the namespaces.
func newNATTopology(t *testing.T) natTopology {
	t.Helper()
	for _, tool := range []string{"ip", "nft", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is missing; `make test-deps` installs it", tool)
			}
			t.Skipf("SKIPPED, NOT RUN: %s is missing (`make test-deps` installs it)", tool)
		}
	}
	tag := fmt.Sprintf("%05d", os.Getpid()%100000)
	top := natTopology{node: "flowattr-nat-" + tag + "-n", client: "flowattr-nat-" + tag + "-c", server: "flowattr-nat-" + tag + "-s"}
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	for _, ns := range []string{top.node, top.client, top.server} {
		ip("netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		ip("-n", ns, "link", "set", "lo", "up")
	}
	for _, l := range []struct {
		ns, dev, peerDev   string
		addr, node, prefix string
	}{
		{top.client, "fnc" + tag, "fnn" + tag, natClient.String(), natNodeC.String(), "/24"},
		{top.server, "fns" + tag, "fnm" + tag, natBackend.Addr().String(), natNodeS.String(), "/24"},
	} {
		ip("link", "add", l.dev, "netns", l.ns, "type", "veth", "peer", "name", l.peerDev, "netns", top.node)
		ip("-n", l.ns, "addr", "add", l.addr+l.prefix, "dev", l.dev)
		ip("-n", l.ns, "link", "set", l.dev, "up")
		ip("-n", l.ns, "route", "add", "default", "via", l.node)
		ip("-n", top.node, "addr", "add", l.node+l.prefix, "dev", l.peerDev)
		ip("-n", top.node, "link", "set", l.peerDev, "up")
	}
	ip("netns", "exec", top.node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	rules := fmt.Sprintf(`table ip flowattr_e2e {
	chain prerouting {
		type nat hook prerouting priority dstnat;
		ip daddr %s tcp dport %d dnat to %s
	}
}`, natService.Addr(), natService.Port(), natBackend)
	cmd := exec.Command("ip", "netns", "exec", top.node, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f in %s: %v: %s", top.node, err, out)
	}
	return top
}

// inNetns runs f on an OS thread switched into the named network namespace.
// Sockets created by f stay in that namespace whatever thread uses them
// later. The thread is never switched back: it ends with its goroutine.
func inNetns(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread dies with the goroutine
		fd, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("opening network namespace %s: %w", ns, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering network namespace %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

func listenIn(t *testing.T, ns, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	if err := inNetns(ns, func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatalf("listening on %s in %s: %v", addr, ns, err)
	}
	return l
}

func dialIn(ns string) collectortest.DialFunc {
	return func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
		err = inNetns(ns, func() error {
			conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
}

// connectToService makes one connection from the client namespace to the
// service address, which the node translates to the backend listening on l,
// and returns the client's port.
func connectToService(t *testing.T, top natTopology, l net.Listener) uint16 {
	t.Helper()
	served := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		defer conn.Close()
		if _, err := io.ReadFull(conn, make([]byte, requestLen)); err != nil {
			served <- err
			return
		}
		_, err = conn.Write(bytes.Repeat([]byte{'r'}, replyLen))
		served <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := dialIn(top.client)(ctx, "tcp", natService.String())
	if err != nil {
		t.Fatalf("dial %s from %s: %v", natService, top.client, err)
	}
	defer conn.Close()
	if _, err := conn.Write(bytes.Repeat([]byte{'q'}, requestLen)); err != nil {
		t.Fatalf("client write: %v", err)
	}
	if reply, err := io.ReadAll(conn); err != nil || len(reply) != replyLen {
		t.Fatalf("client read %d bytes (%v), want %d", len(reply), err, replyLen)
	}
	if err := <-served; err != nil {
		t.Fatalf("backend: %v", err)
	}
	return uint16(conn.LocalAddr().(*net.TCPAddr).Port)
}

// natCollector runs the collector of testdata/e2e-nat.yaml in the node
// namespace, under wrapper (run before the binary, inside the namespace),
// with its sink, health and metrics endpoints on the node's loopback.
type natCollector struct {
	col         *collectortest.Collector
	sink        *collectortest.Sink
	metricsAddr string
}

func startNATCollector(t *testing.T, top natTopology, wrapper ...string) *natCollector {
	t.Helper()
	sink := collectortest.ServeSink(t, listenIn(t, top.node, "127.0.0.1:0"))
	// Ports free in the node namespace, whose loopback only the test uses.
	health, metrics := 13133, 18888
	col := collectortest.Start(t, collectortest.Options{
		Configs: []string{"../../testdata/e2e-nat.yaml"},
		Wrapper: append([]string{"ip", "netns", "exec", top.node}, wrapper...),
		Dial:    dialIn(top.node),
		Env: map[string]string{
			"FLOWATTR_E2E_HEALTH_PORT":  strconv.Itoa(health),
			"FLOWATTR_E2E_METRICS_PORT": strconv.Itoa(metrics),
			"FLOWATTR_E2E_SINK_PORT":    strconv.Itoa(int(sink.Addr.Port())),
		},
	})
	col.WaitReady(t, "127.0.0.1:"+strconv.Itoa(health))
	// Claims start when the receiver starts: a flow starting within
	// clock_skew of that is near_unclaimed_edge by design.
	time.Sleep(e2eClockSkew)
	return &natCollector{col: col, sink: sink, metricsAddr: "127.0.0.1:" + strconv.Itoa(metrics)}
}

// clientRecord waits for the flow record of the client's side of the
// connection from clientPort.
func (c *natCollector) clientRecord(t *testing.T, clientPort uint16) collectortest.Record {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, rec := range c.sink.Records() {
			if rec.Str(flowschema.AttrFlowRole) == flowschema.RoleClient && rec.Int(flowschema.AttrNetworkLocalPort) == int64(clientPort) &&
				rec.Str(flowschema.AttrNetworkLocalAddress) == natClient.String() {
				return rec
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no flow record of the client's connection from port %d within 30s", clientPort)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func checkAttrs(t *testing.T, attrs map[string]any, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if got, ok := attrs[k]; v == nil && ok {
			t.Errorf("%s = %v, want it absent", k, got)
		} else if v != nil && got != v {
			t.Errorf("%s = %v (%T), want %v (%T)", k, got, got, v, v)
		}
	}
}

// TestServiceTranslatedByDNAT: a client connects to a service address that
// the node translates to a backend with a real DNAT rule, as kube-proxy does
// for a ClusterIP. The built collector, running in the node's namespace,
// writes the backend on the client's record from the node's connection
// tracking, and attributes both the service and the backend from their
// claims (static ownership). Then the same collector without CAP_NET_ADMIN:
// connection tracking is unavailable, counted, and the flow still goes out,
// without a translated peer.
func TestServiceTranslatedByDNAT(t *testing.T) {
	requireRoot(t)
	collectortest.Binary(t)
	top := newNATTopology(t)
	backend := listenIn(t, top.server, natBackend.String())
	t.Cleanup(func() { backend.Close() })

	t.Run("translated", func(t *testing.T) {
		c := startNATCollector(t, top)
		port := connectToService(t, top, backend)
		rec := c.clientRecord(t, port)
		checkAttrs(t, rec.Attrs, map[string]any{
			flowschema.AttrNetworkPeerAddress:                               natService.Addr().String(),
			flowschema.AttrNetworkPeerPort:                                  int64(natService.Port()),
			flowschema.AttrPeerTranslatedAddress:                            natBackend.Addr().String(),
			flowschema.AttrPeerTranslatedPort:                               int64(natBackend.Port()),
			flowschema.PrefixLocalOwner + flowschema.OwnerIDSuffix:          "pod-client-uid",
			flowschema.PrefixPeerOwner + flowschema.OwnerIDSuffix:           "svc-web-uid",
			flowschema.PrefixPeerOwner + "k8s.service.name":                 "web",
			flowschema.AttrPeerAttributionStatus:                            "attributed",
			flowschema.PrefixPeerTranslatedOwner + flowschema.OwnerIDSuffix: "pod-web-1-uid",
			flowschema.PrefixPeerTranslatedOwner + "k8s.pod.name":           "web-1",
			flowschema.AttrPeerTranslatedAttributionStatus:                  "attributed",
			flowschema.AttrPeerTranslatedAttributionReason:                  nil,
		})
		metrics := c.col.Metrics(t, c.metricsAddr)
		if n := collectortest.MetricSum(metrics, "otelcol_ebpfflow_nat_lookups", "at", "connect", "result", "translated"); n < 1 {
			t.Errorf("ebpfflow_nat_lookups{at=connect,result=translated} = %v, want at least 1: the lookup is made at connect", n)
		}
		c.col.Stop(t)
	})

	t.Run("conntrack unavailable", func(t *testing.T) {
		// Without CAP_NET_ADMIN connection tracking refuses every query.
		c := startNATCollector(t, top, "setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin")
		port := connectToService(t, top, backend)
		rec := c.clientRecord(t, port)
		checkAttrs(t, rec.Attrs, map[string]any{
			flowschema.AttrNetworkPeerAddress:                               natService.Addr().String(),
			flowschema.AttrPeerTranslatedAddress:                            nil,
			flowschema.AttrPeerTranslatedPort:                               nil,
			flowschema.PrefixPeerOwner + flowschema.OwnerIDSuffix:           "svc-web-uid",
			flowschema.AttrPeerAttributionStatus:                            "attributed",
			flowschema.PrefixPeerTranslatedOwner + flowschema.OwnerIDSuffix: nil,
			flowschema.AttrPeerTranslatedAttributionStatus:                  nil,
		})
		metrics := c.col.Metrics(t, c.metricsAddr)
		if n := collectortest.MetricSum(metrics, "otelcol_ebpfflow_nat_lookups", "result", "unavailable"); n < 1 {
			t.Errorf("ebpfflow_nat_lookups{result=unavailable} = %v, want at least 1", n)
		}
		if n := collectortest.MetricSum(metrics, "otelcol_ebpfflow_nat_lookups", "result", "translated"); n != 0 {
			t.Errorf("ebpfflow_nat_lookups{result=translated} = %v without connection tracking", n)
		}
		if !strings.Contains(c.col.Output(), "Connection tracking is unavailable") {
			t.Errorf("the collector did not log that connection tracking is unavailable")
		}
		c.col.Stop(t)
	})
}
