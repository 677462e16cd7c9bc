package kube

import (
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/test/internal/collectortest"
)

const (
	node     = "node-a"
	podCIDR  = "10.244.1.0/24"
	port     = 8080
	waitLong = 20 * time.Second
	// edgeMargin keeps the test's connections clear of owner changes:
	// more than the processor's clock_skew.
	edgeMargin = 500 * time.Millisecond
)

var (
	nodeNet   = netip.MustParsePrefix("10.244.1.1/16")
	clientNet = netip.MustParsePrefix("10.244.9.1/16")
)

// collector is a running collector of node and what the test reads of it.
type collector struct {
	*collectortest.Collector
	metricsAddr string
}

func startCollector(t *testing.T, c *cluster, sink *collectortest.Sink, nodeName string) *collector {
	t.Helper()
	health, metrics := collectortest.FreePort(t), collectortest.FreePort(t)
	col := collectortest.Start(t, collectortest.Options{
		Name:    nodeName,
		Configs: []string{"../../testdata/e2e-kube.yaml"},
		Env: map[string]string{
			"FLOWATTR_E2E_HEALTH_PORT":  strconv.Itoa(health),
			"FLOWATTR_E2E_METRICS_PORT": strconv.Itoa(metrics),
			"FLOWATTR_E2E_SINK_PORT":    strconv.Itoa(int(sink.Addr.Port())),
			"FLOWATTR_E2E_NODE":         nodeName,
			"FLOWATTR_E2E_KUBECONFIG":   c.kubeconfig,
		},
	})
	col.WaitReady(t, "127.0.0.1:"+strconv.Itoa(health))
	return &collector{Collector: col, metricsAddr: "127.0.0.1:" + strconv.Itoa(metrics)}
}

// claims returns the claim records for addr received after since.
func claims(sink *collectortest.Sink, addr netip.Addr, since time.Time) []collectortest.Record {
	var out []collectortest.Record
	for _, r := range sink.Records() {
		if r.EventName == flowschema.EventClaim && r.Str(flowschema.AttrClaimAddress) == addr.String() && !r.Received.Before(since) {
			out = append(out, r)
		}
	}
	return out
}

// waitClaim waits for a claim of addr by owner received after since and
// returns when it arrived.
func waitClaim(t *testing.T, sink *collectortest.Sink, addr netip.Addr, owner string, since time.Time) time.Time {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for time.Now().Before(deadline) {
		for _, r := range claims(sink, addr, since) {
			if r.Str(flowschema.PrefixClaimOwner+flowschema.OwnerIDSuffix) == owner {
				return r.Received
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no claim of %s by %s within %s", addr, owner, waitLong)
	return time.Time{}
}

// conn is a connection the test made, and who held its server address.
type conn struct {
	clientPort int
	start      time.Time
	owner      string // the pod UID that held the address
}

// clientRecord waits for the flow record of c's client side.
func clientRecord(t *testing.T, sink *collectortest.Sink, c conn) collectortest.Record {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for time.Now().Before(deadline) {
		for _, r := range sink.Records() {
			if r.EventName == flowschema.EventFlow && r.Str(flowschema.AttrNetworkLocalAddress) == clientNet.Addr().String() &&
				r.Int(flowschema.AttrNetworkLocalPort) == int64(c.clientPort) && r.Str(flowschema.AttrPeerAttributionStatus) != "" {
				return r
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no attributed client record of the connection from port %d", c.clientPort)
	return collectortest.Record{}
}

// serverRecord waits for the flow record of c's server side.
func serverRecord(t *testing.T, sink *collectortest.Sink, c conn) collectortest.Record {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for time.Now().Before(deadline) {
		for _, r := range sink.Records() {
			if r.EventName == flowschema.EventFlow && r.Int(flowschema.AttrNetworkPeerPort) == int64(c.clientPort) &&
				r.Str(flowschema.AttrNetworkPeerAddress) == clientNet.Addr().String() {
				return r
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no server record of the connection from port %d", c.clientPort)
	return collectortest.Record{}
}

// TestPodAddressReuse runs the collector of one node against a real API
// server while the test, playing the kubelet, gives one address to pod A,
// deletes A and gives the address to pod B two seconds later, then marks B
// completed (phase Succeeded, never deleted) and gives the address to pod
// C; real connections reach the address from another network namespace
// throughout. Every connection's peer is attributed to the pod that held
// the address when it started, or not at all: never to another pod. Then
// the collector restarts, and claims C's address back to C's sandbox time,
// no earlier.
func TestPodAddressReuse(t *testing.T) {
	requireEnv(t)
	c := startCluster(t)
	c.addNode(t, node, podCIDR)
	nodeNS, clientNS := newLink(t, "r", nodeNet, clientNet)
	nodeNS.serve(t, port)
	sink := collectortest.StartSink(t)
	col := startCollector(t, c, sink, node)

	addr := netip.MustParseAddr("10.244.1.5")
	var conns []conn
	hold := func(name string, prev func()) (uid string, sandbox time.Time) {
		if prev != nil {
			prev()
		}
		pod := c.createPod(t, podSpec{name: name, node: node})
		nodeNS.addAddr(t, addr)
		sandbox = time.Now()
		c.startPod(t, pod, addr, sandbox)
		uid = string(pod.UID)
		waitClaim(t, sink, addr, uid, time.Time{})
		// Flows within clock_skew (200ms) of a tenure's start or end are
		// rightly unattributed: keep clear of both.
		time.Sleep(edgeMargin)
		for range 5 {
			p, start := clientNS.connect(t, addr, port)
			conns = append(conns, conn{clientPort: p, start: start, owner: uid})
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(edgeMargin)
		return uid, sandbox
	}

	uidA, _ := hold("a", nil)
	podA, err := c.client.CoreV1().Pods("default").Get(t.Context(), "a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uidB, _ := hold("b", func() {
		c.deletePod(t, podA)
		nodeNS.delAddr(t, addr)
		time.Sleep(2 * time.Second)
	})
	podB, err := c.client.CoreV1().Pods("default").Get(t.Context(), "b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uidC, sandboxC := hold("c", func() {
		c.finishPod(t, podB)
		nodeNS.delAddr(t, addr)
		time.Sleep(2 * time.Second)
	})
	t.Logf("pods a %s, b %s (completed, not deleted), c %s held %s in turn", uidA, uidB, uidC, addr)

	t.Run("attribution", func(t *testing.T) {
		attributed := 0
		for _, cn := range conns {
			rec := clientRecord(t, sink, cn)
			status := rec.Str(flowschema.AttrPeerAttributionStatus)
			got := rec.Str(flowschema.PrefixPeerOwner + flowschema.OwnerIDSuffix)
			switch {
			case status == "attributed" && got == cn.owner:
				attributed++
			case status == "attributed":
				t.Errorf("connection from port %d at %s: peer attributed to %s, but %s held %s", cn.clientPort, cn.start.Format(time.StampMilli), got, cn.owner, addr)
			default:
				t.Logf("connection from port %d: %s (%s)", cn.clientPort, status, rec.Str(flowschema.AttrPeerAttributionReason))
			}
			srv := serverRecord(t, sink, cn)
			if local := srv.Str(flowschema.PrefixLocalOwner + flowschema.OwnerIDSuffix); local != "" && local != cn.owner {
				t.Errorf("server side of the connection from port %d names %s as local owner, want %s", cn.clientPort, local, cn.owner)
			}
		}
		t.Logf("%d of %d connections attributed to the pod that held the address", attributed, len(conns))
		if attributed < len(conns) {
			t.Errorf("only %d of %d connections attributed; every connection clear of an owner change should be", attributed, len(conns))
		}
	})

	t.Run("collector_restart", func(t *testing.T) {
		col.Stop(t)
		restart := time.Now()
		time.Sleep(1100 * time.Millisecond) // the restarted collector starts in a later second than C's sandbox
		startCollector(t, c, sink, node)
		waitClaim(t, sink, addr, uidC, restart)
		want := sandboxC.Truncate(time.Second).Add(time.Second)
		var starts []time.Time
		for _, r := range claims(sink, addr, restart) {
			starts = append(starts, time.Unix(0, r.Int(flowschema.AttrClaimStartTime)))
		}
		first := slices.MinFunc(starts, time.Time.Compare)
		if !first.Equal(want) {
			t.Errorf("the restarted collector claims %s from %s, want from %s: C's sandbox time rounded up to the second, no earlier",
				addr, first.Format(time.StampMilli), want.Format(time.StampMilli))
		}
		if !first.Before(restart) {
			t.Errorf("the restarted collector claims %s from %s only, after it restarted (%s)", addr, first, restart)
		}
	})
}

// TestClaimLatency measures the time from a pod's address being written to
// the API server (from when UpdateStatus is called) to the first claim of it arriving
// at the collector's exporter's destination, over 20 pods, and checks the
// median against the target of 1 s.
func TestClaimLatency(t *testing.T) {
	requireEnv(t)
	c := startCluster(t)
	c.addNode(t, node, podCIDR)
	sink := collectortest.StartSink(t)
	startCollector(t, c, sink, node)
	var latencies []time.Duration
	for i := range 20 {
		addr := netip.AddrFrom4([4]byte{10, 244, 1, byte(100 + i)})
		pod := c.createPod(t, podSpec{name: "latency-" + strconv.Itoa(i), node: node})
		written := time.Now() // conservative: before the request, not when it was stored
		pod = c.startPod(t, pod, addr, written)
		got := waitClaim(t, sink, addr, string(pod.UID), time.Time{})
		latencies = append(latencies, got.Sub(written))
	}
	slices.Sort(latencies)
	median := latencies[len(latencies)/2]
	t.Logf("claim latency over %d pods: min %s, median %s, max %s", len(latencies), latencies[0], median, latencies[len(latencies)-1])
	if median >= time.Second {
		t.Errorf("median claim latency %s, want under 1s", median)
	}
}
