package netns

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

// IP runs an ip(8) command and fails the test on error.
func IP(tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		tb.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// Add creates the named namespace with lo up, deleted when the test ends.
// A machine that cannot create one skips the test, loudly.
func Add(tb testing.TB, name string) {
	tb.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		tb.Skipf("SKIPPED, NOT RUN: cannot create network namespace %s: %v: %s", name, err, out)
	}
	tb.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	IP(tb, "-n", name, "link", "set", "lo", "up")
}

// End is one end of a veth pair: its namespace, device and address.
type End struct {
	NS, Dev string
	Prefix  netip.Prefix
}

// AddAddr puts a single address on the end's device.
func (e End) AddAddr(tb testing.TB, a netip.Addr) {
	tb.Helper()
	IP(tb, "-n", e.NS, "addr", "add", netip.PrefixFrom(a, a.BitLen()).String(), "dev", e.Dev)
}

// DelAddr removes a single address from the end's device.
func (e End) DelAddr(tb testing.TB, a netip.Addr) {
	tb.Helper()
	IP(tb, "-n", e.NS, "addr", "del", netip.PrefixFrom(a, a.BitLen()).String(), "dev", e.Dev)
}

// Pair creates the namespaces of a and b (see Add) joined by a veth pair,
// each end up with its prefix. Nothing is routed outside them.
func Pair(tb testing.TB, a, b End) {
	tb.Helper()
	Add(tb, a.NS)
	Add(tb, b.NS)
	IP(tb, "link", "add", a.Dev, "netns", a.NS, "type", "veth", "peer", "name", b.Dev, "netns", b.NS)
	for _, e := range []End{a, b} {
		IP(tb, "-n", e.NS, "addr", "add", e.Prefix.String(), "dev", e.Dev)
		IP(tb, "-n", e.NS, "link", "set", e.Dev, "up")
	}
}

// In runs f on an OS thread switched into the named network namespace.
// Sockets created by f stay in that namespace whatever thread uses them
// later. The thread is never switched back: it ends with its goroutine.
func In(ns string, f func() error) error {
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

// Listen opens a TCP listener inside ns.
func Listen(ns, addr string) (net.Listener, error) {
	var l net.Listener
	err := In(ns, func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l, err
}

// Dialer dials from inside ns, from local when it is valid.
func Dialer(ns string, local netip.Addr) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{}
		if local.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
		}
		var conn net.Conn
		err := In(ns, func() (err error) {
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
}

// Inode returns the inode of the named namespace, which the receiver
// writes on every flow record.
func Inode(ns string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/var/run/netns/"+ns, &st); err != nil {
		return 0, fmt.Errorf("stat network namespace %s: %w", ns, err)
	}
	return st.Ino, nil
}

// Missing lists what the machine lacks to run tests in network namespaces
// with the eBPF receiver: root, the ip command, kernel BTF. Tests skip,
// loudly, naming it.
func Missing() []string {
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
	return missing
}
