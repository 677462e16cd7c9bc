package kube

import (
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/test/internal/collectortest"
	"github.com/flowattr/flowattr/test/internal/netns"
	"github.com/flowattr/flowattr/test/internal/testca"
)

// nodeOverlay is merged over testdata/fleet/node.yaml: the kubernetes
// source first (the ownership file stays empty), fast timings, only the
// namespace each collector runs in (every namespace shares one kernel),
// and records of pod addresses only, not of the collectors' own traffic.
const nodeOverlay = `
receivers:
  ebpfflow:
    flush_interval: 200ms
    active_interval: 0s
    filter:
      own_netns_only: true
      include_cidrs: [10.244.0.0/16]
    ownership:
      precedence: [kubernetes, file, static]
      kubernetes:
        enabled: true
        node_name: ${env:FLOWATTR_NODE_NAME}
        kubeconfig: ${env:FLOWATTR_E2E_KUBECONFIG}
`

// kubeNode is a node's network namespace and its collector.
type kubeNode struct {
	name   string
	space  *space
	infra  netip.Addr // the address the collectors talk over
	client netip.Addr // the address the node's connections come from
	col    *collectortest.Collector
}

// TestPodMovesBetweenNodes runs two nodes, each a network namespace with a
// collector of the node-fleet shape (testdata/fleet/node.yaml: claims
// exchanged over mutual TLS) whose kubernetes source watches that node's
// pods through a proxy to the API server. Pod A on node-a holds an
// address; A is deleted and pod B on node-b is given the address. A
// connection's peer is attributed, on the client's node from the other
// node's claims, and its local side on the server's node from its own
// source: to A before the move, to no one or B right after it (never A),
// to B once B's claims have reached node-a.
func TestPodMovesBetweenNodes(t *testing.T) {
	requireEnv(t)
	collectortest.Binary(t)
	c := startCluster(t)
	u, err := url.Parse(c.env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("%05d", os.Getpid()%100000)
	a := &kubeNode{name: "node-a", infra: netip.MustParseAddr("10.202.0.1"), client: netip.MustParseAddr("10.244.1.9")}
	b := &kubeNode{name: "node-b", infra: netip.MustParseAddr("10.202.0.2"), client: netip.MustParseAddr("10.244.2.9")}
	a.space = &space{netns.End{NS: "flowattr-kube-" + id + "-na", Dev: "fk" + id + "na", Prefix: netip.PrefixFrom(a.infra, 24)}}
	b.space = &space{netns.End{NS: "flowattr-kube-" + id + "-nb", Dev: "fk" + id + "nb", Prefix: netip.PrefixFrom(b.infra, 24)}}
	netns.Pair(t, a.space.End, b.space.End)

	dir := t.TempDir()
	overlay, ownership := filepath.Join(dir, "overlay.yaml"), filepath.Join(dir, "owners.yaml")
	for path, data := range map[string]string{overlay: nodeOverlay, ownership: "[]\n"} {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sinkListener, err := netns.Listen(a.space.NS, netip.AddrPortFrom(a.infra, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	sink := collectortest.ServeSink(t, sinkListener)
	ca := testca.New(t, "flowattr-test-kube")
	claimEndpoint := func(n *kubeNode) string { return netip.AddrPortFrom(n.infra, 4317).String() }
	for _, n := range []*kubeNode{a, b} {
		// The node's kubernetes source reaches the API server, outside
		// the namespace, through a proxy on the namespace's loopback.
		netns.IP(t, "-n", n.space.NS, "addr", "add", netip.PrefixFrom(n.client, 16).String(), "dev", n.space.Dev)
		l, err := netns.Listen(n.space.NS, "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		proxy := startCutProxy(t, l, u.Host)
		n.space.serve(t, port)
		cert := ca.Issue(t, n.name, n.infra.AsSlice())
		n.col = collectortest.Start(t, collectortest.Options{
			Name:    n.name,
			Configs: []string{"../../testdata/fleet/node.yaml", overlay},
			Wrapper: []string{"ip", "netns", "exec", n.space.NS},
			Dial:    netns.Dialer(n.space.NS, netip.Addr{}),
			Env: map[string]string{
				"FLOWATTR_NODE_NAME":       n.name,
				"FLOWATTR_OWNERSHIP_FILE":  ownership,
				"FLOWATTR_CLAIM_INTERVAL":  "1s",
				"FLOWATTR_CLAIM_ENDPOINT":  claimEndpoint(n),
				"FLOWATTR_PEER_1":          claimEndpoint(a),
				"FLOWATTR_PEER_2":          claimEndpoint(b),
				"FLOWATTR_TLS_CA":          ca.File,
				"FLOWATTR_TLS_CERT":        cert.CertFile,
				"FLOWATTR_TLS_KEY":         cert.KeyFile,
				"FLOWATTR_FLOWS_ENDPOINT":  sink.Addr.String(),
				"FLOWATTR_MAX_WAIT":        "5s",
				"FLOWATTR_CLOCK_SKEW":      "200ms",
				"FLOWATTR_E2E_KUBECONFIG":  throughProxy(t, c.kubeconfig, proxy),
				"FLOWATTR_HEALTH_ENDPOINT": "127.0.0.1:13133",
			},
		})
	}
	for _, n := range []*kubeNode{a, b} {
		n.col.WaitReady(t, "127.0.0.1:13133")
	}

	moving := netip.MustParseAddr("10.244.1.50")
	// settle covers a claim's way to the other node: claimed at once, sent
	// over mutual TLS, merged there.
	const settle = 1500 * time.Millisecond
	connect := func(from *kubeNode, owner string, n int) []conn {
		var out []conn
		for range n {
			p, start := from.space.connect(t, moving, port)
			out = append(out, conn{client: from.client, clientPort: p, start: start, owner: owner})
			time.Sleep(100 * time.Millisecond)
		}
		return out
	}

	podA := c.createPod(t, podSpec{name: "a", node: a.name})
	a.space.AddAddr(t, moving)
	podA = c.startPod(t, podA, moving, time.Now())
	uidA := string(podA.UID)
	time.Sleep(settle)
	before := connect(b, uidA, 3)
	time.Sleep(edgeMargin)

	c.deletePod(t, podA)
	a.space.DelAddr(t, moving)
	podB := c.createPod(t, podSpec{name: "b", node: b.name})
	b.space.AddAddr(t, moving)
	podB = c.startPod(t, podB, moving, time.Now())
	uidB := string(podB.UID)
	near := connect(a, "", 3)
	time.Sleep(settle)
	after := connect(a, uidB, 3)
	t.Logf("pod a %s on node-a, then pod b %s on node-b held %s", uidA, uidB, moving)

	for _, cn := range append(append(before, near...), after...) {
		rec := clientRecord(t, sink, cn)
		status := rec.Str(flowschema.AttrPeerAttributionStatus)
		peer := rec.Str(flowschema.PrefixPeerOwner + flowschema.OwnerIDSuffix)
		srv := serverRecord(t, sink, cn)
		local := srv.Str(flowschema.PrefixLocalOwner + flowschema.OwnerIDSuffix)
		at := cn.start.Format(time.StampMilli)
		switch {
		case cn.owner == "" && status == "attributed" && peer != uidB:
			t.Errorf("connection from %s:%d at %s, right after the move: peer attributed to %s, want B or no one", cn.client, cn.clientPort, at, peer)
		case cn.owner == "" && local != "" && local != uidB:
			t.Errorf("connection from %s:%d at %s, right after the move: server side names %s as local owner, want B or no one", cn.client, cn.clientPort, at, local)
		case cn.owner != "" && (status != "attributed" || peer != cn.owner):
			t.Errorf("connection from %s:%d at %s: peer %s %q (%s), want attributed to %s", cn.client, cn.clientPort, at,
				status, peer, rec.Str(flowschema.AttrPeerAttributionReason), cn.owner)
		case cn.owner != "" && local != cn.owner:
			t.Errorf("connection from %s:%d at %s: server side names %q as local owner, want %s", cn.client, cn.clientPort, at, local, cn.owner)
		default:
			t.Logf("connection from %s:%d at %s: peer %s %q, server's local owner %q", cn.client, cn.clientPort, at, status, peer, local)
		}
	}
}
