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
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/test/internal/collectortest"
	"github.com/flowattr/flowattr/test/internal/netns"
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

// newNATTopology creates the namespaces, links and the DNAT rule of
// netns.NewNAT for the addresses above, deleted when the test ends.
func newNATTopology(t *testing.T) netns.NAT {
	t.Helper()
	for _, tool := range []string{"ip", "nft", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is missing; `make test-deps` installs it", tool)
			}
			t.Skipf("SKIPPED, NOT RUN: %s is missing (`make test-deps` installs it)", tool)
		}
	}
	return netns.NewNAT(t, "nat", "fn", fmt.Sprintf("%05d", os.Getpid()%100000), netns.NATAddrs{
		Client: natClient, NodeC: natNodeC, NodeS: natNodeS, Backend: natBackend, Service: natService,
	})
}

func listenIn(t *testing.T, ns, addr string) net.Listener {
	t.Helper()
	l, err := netns.Listen(ns, addr)
	if err != nil {
		t.Fatalf("listening on %s in %s: %v", addr, ns, err)
	}
	return l
}

// connectToService makes one connection from the client namespace to the
// service address, which the node translates to the backend listening on l,
// and returns the client's port.
func connectToService(t *testing.T, top netns.NAT, l net.Listener) uint16 {
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
	conn, err := netns.Dialer(top.Client, netip.Addr{})(ctx, "tcp", natService.String())
	if err != nil {
		t.Fatalf("dial %s from %s: %v", natService, top.Client, err)
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

func startNATCollector(t *testing.T, top netns.NAT, wrapper ...string) *natCollector {
	t.Helper()
	sink := collectortest.ServeSink(t, listenIn(t, top.Node, "127.0.0.1:0"))
	// Ports free in the node namespace, whose loopback only the test uses.
	health, metrics := 13133, 18888
	col := collectortest.Start(t, collectortest.Options{
		Configs: []string{"../../testdata/e2e-nat.yaml"},
		Wrapper: append([]string{"ip", "netns", "exec", top.Node}, wrapper...),
		Dial:    netns.Dialer(top.Node, netip.Addr{}),
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
	backend := listenIn(t, top.Server, natBackend.String())
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
