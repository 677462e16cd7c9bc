package netns

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
)

// NAT is three network namespaces: a client and a server, each linked
// (/24) to a node that routes between them and translates a service
// address to the server with a DNAT rule at prerouting, as kube-proxy does.
type NAT struct{ Node, Client, Server string }

// NATAddrs are a NAT's addresses: the client and the node on one link, the
// node and the backend on the other, and the service the node translates
// to the backend.
type NATAddrs struct {
	Client, NodeC, NodeS netip.Addr
	Backend, Service     netip.AddrPort
}

// NewNAT creates the namespaces (flowattr-<name>-<tag>-{n,c,s}), links (devices
// <dev><tag>{c,n,s,m}) and the nft DNAT rule; all are deleted when the
// test ends. Nothing is routed outside the namespaces.
func NewNAT(tb testing.TB, name, dev, tag string, a NATAddrs) NAT {
	tb.Helper()
	top := NAT{Node: "flowattr-" + name + "-" + tag + "-n", Client: "flowattr-" + name + "-" + tag + "-c", Server: "flowattr-" + name + "-" + tag + "-s"}
	for _, ns := range []string{top.Node, top.Client, top.Server} {
		IP(tb, "netns", "add", ns)
		tb.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		IP(tb, "-n", ns, "link", "set", "lo", "up")
	}
	for _, l := range []struct {
		ns, dev, peerDev string
		addr, node       netip.Addr
	}{
		{top.Client, dev + tag + "c", dev + tag + "n", a.Client, a.NodeC},
		{top.Server, dev + tag + "s", dev + tag + "m", a.Backend.Addr(), a.NodeS},
	} {
		IP(tb, "link", "add", l.dev, "netns", l.ns, "type", "veth", "peer", "name", l.peerDev, "netns", top.Node)
		IP(tb, "-n", l.ns, "addr", "add", netip.PrefixFrom(l.addr, 24).String(), "dev", l.dev)
		IP(tb, "-n", l.ns, "link", "set", l.dev, "up")
		IP(tb, "-n", l.ns, "route", "add", "default", "via", l.node.String())
		IP(tb, "-n", top.Node, "addr", "add", netip.PrefixFrom(l.node, 24).String(), "dev", l.peerDev)
		IP(tb, "-n", top.Node, "link", "set", l.peerDev, "up")
	}
	IP(tb, "netns", "exec", top.Node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	rules := fmt.Sprintf(`table ip flowattr_e2e {
	chain prerouting {
		type nat hook prerouting priority dstnat;
		ip daddr %s tcp dport %d dnat to %s
	}
}`, a.Service.Addr(), a.Service.Port(), a.Backend)
	cmd := exec.Command("ip", "netns", "exec", top.Node, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("nft -f in %s: %v: %s", top.Node, err, out)
	}
	return top
}
