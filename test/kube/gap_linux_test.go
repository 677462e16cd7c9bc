package kube

import (
	"net"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/test/internal/collectortest"
)

// TestAPIServerGap runs the collector of one node through a proxy to the
// API server, and cuts the proxy while the address of pod A moves to pod
// B: A is deleted and B given its address while the collector cannot see
// the API server. Once the proxy is restored the source lists again. No
// claim covers the gap: A's end before A was deleted, B's start after the
// list that follows the restore. Connections before the gap are
// attributed to A, during it to no one, after it to B.
func TestAPIServerGap(t *testing.T) {
	requireEnv(t)
	c := startCluster(t)
	c.addNode(t, podCIDR)
	u, err := url.Parse(c.env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxy := startCutProxy(t, l, u.Host)
	nodeNS, clientNS := newLink(t, "g", nodeNet, clientNet)
	nodeNS.serve(t, port)
	sink := collectortest.StartSink(t)
	col := startCollector(t, throughProxy(t, c.kubeconfig, proxy), sink)

	addr := netip.MustParseAddr("10.244.1.7")
	connect := func(owner string) []conn {
		var out []conn
		for range 3 {
			p, start := clientNS.connect(t, addr, port)
			out = append(out, conn{client: clientNet.Addr(), clientPort: p, start: start, owner: owner})
			time.Sleep(100 * time.Millisecond)
		}
		return out
	}

	podA := c.createPod(t, podSpec{name: "a", node: node})
	nodeNS.AddAddr(t, addr)
	podA = c.startPod(t, podA, addr, time.Now())
	uidA := string(podA.UID)
	waitClaim(t, sink, addr, uidA, time.Time{})
	time.Sleep(edgeMargin)
	before := connect(uidA)
	time.Sleep(edgeMargin)

	cutAt := time.Now()
	proxy.setCut(true)
	waitMetric(t, col, "otelcol_ebpfflow_kubernetes_watch_gaps", "resource", "pods")
	time.Sleep(edgeMargin)
	during := connect("")
	deletedAt := time.Now()
	c.deletePod(t, podA)
	nodeNS.DelAddr(t, addr)
	time.Sleep(time.Second)
	podB := c.createPod(t, podSpec{name: "b", node: node})
	nodeNS.AddAddr(t, addr)
	podB = c.startPod(t, podB, addr, time.Now())
	uidB := string(podB.UID)
	time.Sleep(edgeMargin)
	during = append(during, connect("")...) // B holds the address, unseen
	restoredAt := time.Now()
	proxy.setCut(false)
	waitClaim(t, sink, addr, uidB, restoredAt)
	time.Sleep(edgeMargin)
	after := connect(uidB)
	t.Logf("pod a %s held %s until the gap (cut %s, deleted %s), pod b %s from within it (restored %s)",
		uidA, addr, cutAt.Format(time.StampMilli), deletedAt.Format(time.StampMilli), uidB, restoredAt.Format(time.StampMilli))

	for _, r := range claims(sink, addr, time.Time{}) {
		owner := r.Str(flowschema.PrefixClaimOwner + flowschema.OwnerIDSuffix)
		start := time.Unix(0, r.Int(flowschema.AttrClaimStartTime))
		end := time.Unix(0, r.Int(flowschema.AttrClaimEndTime))
		switch owner {
		case uidA:
			if end.After(deletedAt) {
				t.Errorf("A claimed %s until %s, past the gap's start (cut %s, A deleted %s)", addr,
					end.Format(time.StampMilli), cutAt.Format(time.StampMilli), deletedAt.Format(time.StampMilli))
			}
		case uidB:
			if start.Before(restoredAt) {
				t.Errorf("B claimed %s from %s, before the API server was back (%s): over the gap", addr,
					start.Format(time.StampMilli), restoredAt.Format(time.StampMilli))
			}
		default:
			t.Errorf("unexpected claim of %s by %q", addr, owner)
		}
	}
	for _, cn := range append(append(before, during...), after...) {
		rec := clientRecord(t, sink, cn)
		status := rec.Str(flowschema.AttrPeerAttributionStatus)
		got := rec.Str(flowschema.PrefixPeerOwner + flowschema.OwnerIDSuffix)
		switch {
		case cn.owner == "" && status == "attributed":
			t.Errorf("connection from port %d at %s, in the gap: peer attributed to %s, want unattributed", cn.clientPort, cn.start.Format(time.StampMilli), got)
		case cn.owner != "" && (status != "attributed" || got != cn.owner):
			t.Errorf("connection from port %d at %s: peer %s %q (%s), want attributed to %s", cn.clientPort, cn.start.Format(time.StampMilli),
				status, got, rec.Str(flowschema.AttrPeerAttributionReason), cn.owner)
		}
	}
}

// waitMetric waits until the collector's counter name, with the label
// pair, is positive.
func waitMetric(t *testing.T, col *collector, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for time.Now().Before(deadline) {
		if collectortest.MetricSum(col.Metrics(t, col.metricsAddr), name, labels...) > 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s{%v} still 0 after %s", name, labels, waitLong)
}
