package fleet

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/flowattr/flowattr/test/internal/netns"
)

// requireNetnsAndBPF skips the test, loudly, when the machine cannot create
// network namespaces or load eBPF programs; everywhere this project runs
// (root, Linux with BTF) both work and the test runs.
func requireNetnsAndBPF(t *testing.T) {
	t.Helper()
	missing := netns.Missing()
	if len(missing) > 0 {
		t.Skipf("SKIPPED, NOT RUN: this fleet test needs %s", strings.Join(missing, ", "))
	}
}

// netnsInode returns the inode of the named namespace, which the receiver
// writes on every flow record.
func netnsInode(t *testing.T, ns string) int64 {
	t.Helper()
	ino, err := netns.Inode(ns)
	must(t, err, "inode of %s", ns)
	return int64(ino)
}

// host is a network namespace standing for one machine of the fleet.
type host struct {
	name  string // used as the collector's claim source
	netns string
	dev   string
	addr  netip.Addr // the infrastructure address collectors talk over
}

// end is the host's end of its veth pair.
func (h *host) end() netns.End { return netns.End{NS: h.netns, Dev: h.dev} }

// addAddr puts a workload address on the host's interface.
func (h *host) addAddr(t *testing.T, a netip.Addr) { t.Helper(); h.end().AddAddr(t, a) }

// delAddr removes a workload address from the host's interface.
func (h *host) delAddr(t *testing.T, a netip.Addr) { t.Helper(); h.end().DelAddr(t, a) }

// newHostPair creates two namespaces joined by a veth pair on 10.201.0.0/24
// (.1 and .2); nothing is routed outside them. They are deleted when the test
// ends.
func newHostPair(t *testing.T) (*host, *host) {
	t.Helper()
	tag := fmt.Sprintf("%05d", os.Getpid()%100000)
	h1 := &host{name: "host-1", netns: "flowattr-fleet-" + tag + "-1", dev: "faf" + tag + "a", addr: netip.MustParseAddr("10.201.0.1")}
	h2 := &host{name: "host-2", netns: "flowattr-fleet-" + tag + "-2", dev: "faf" + tag + "b", addr: netip.MustParseAddr("10.201.0.2")}
	e1, e2 := h1.end(), h2.end()
	e1.Prefix, e2.Prefix = netip.PrefixFrom(h1.addr, 24), netip.PrefixFrom(h2.addr, 24)
	netns.Pair(t, e1, e2)
	return h1, h2
}
