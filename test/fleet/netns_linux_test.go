package fleet

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// requireNetnsAndBPF skips the test, loudly, when the machine cannot create
// network namespaces or load eBPF programs; everywhere this project runs
// (root, Linux with BTF) both work and the test runs.
func requireNetnsAndBPF(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network namespaces and eBPF)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		missing = append(missing, "the ip command (iproute2; `make test-deps` installs it)")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		missing = append(missing, "kernel BTF at /sys/kernel/btf/vmlinux")
	}
	if len(missing) > 0 {
		t.Skipf("SKIPPED, NOT RUN: this fleet test needs %s", strings.Join(missing, ", "))
	}
}

// runIP runs an ip(8) command and fails the test on error.
func runIP(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
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

// netnsDialer dials from inside ns, from local when it is valid.
func netnsDialer(ns string, local netip.Addr) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{}
		if local.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
		}
		var conn net.Conn
		err := inNetns(ns, func() error {
			var err error
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
}

// listenIn opens a TCP listener inside ns.
func listenIn(ns, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNetns(ns, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l, err
}

// netnsInode returns the inode of the named namespace, which the receiver
// writes on every flow record.
func netnsInode(t *testing.T, ns string) int64 {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Stat("/var/run/netns/"+ns, &st), "stat netns %s", ns)
	return int64(st.Ino)
}

// host is a network namespace standing for one machine of the fleet.
type host struct {
	name  string // used as the collector's claim source
	netns string
	dev   string
	addr  netip.Addr // the infrastructure address collectors talk over
}

// addAddr puts a workload address on the host's interface.
func (h *host) addAddr(t *testing.T, a netip.Addr) {
	t.Helper()
	runIP(t, "-n", h.netns, "addr", "add", a.String()+"/32", "dev", h.dev)
}

// delAddr removes a workload address from the host's interface.
func (h *host) delAddr(t *testing.T, a netip.Addr) {
	t.Helper()
	runIP(t, "-n", h.netns, "addr", "del", a.String()+"/32", "dev", h.dev)
}

// newHostPair creates two namespaces joined by a veth pair on 10.201.0.0/24
// (.1 and .2); nothing is routed outside them. They are deleted when the test
// ends.
func newHostPair(t *testing.T) (*host, *host) {
	t.Helper()
	tag := fmt.Sprintf("%05d", os.Getpid()%100000)
	h1 := &host{name: "host-1", netns: "flowattr-fleet-" + tag + "-1", dev: "faf" + tag + "a", addr: netip.MustParseAddr("10.201.0.1")}
	h2 := &host{name: "host-2", netns: "flowattr-fleet-" + tag + "-2", dev: "faf" + tag + "b", addr: netip.MustParseAddr("10.201.0.2")}
	for _, h := range []*host{h1, h2} {
		ns := h.netns
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Skipf("SKIPPED, NOT RUN: cannot create network namespace %s: %v: %s", ns, err, out)
		}
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	runIP(t, "link", "add", h1.dev, "netns", h1.netns, "type", "veth", "peer", "name", h2.dev, "netns", h2.netns)
	for _, h := range []*host{h1, h2} {
		runIP(t, "-n", h.netns, "link", "set", "lo", "up")
		runIP(t, "-n", h.netns, "addr", "add", h.addr.String()+"/24", "dev", h.dev)
		runIP(t, "-n", h.netns, "link", "set", h.dev, "up")
	}
	return h1, h2
}
