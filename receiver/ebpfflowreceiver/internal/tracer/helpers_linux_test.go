package tracer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startTracer loads the tracer or skips the test when the kernel cannot run
// it; it is closed at cleanup.
func startTracer(t testing.TB, opts Options) *Tracer {
	t.Helper()
	return startTracerWith(t, opts, testOptions{})
}

// startTracerWith is startTracer with test settings.
func startTracerWith(t testing.TB, opts Options, test testOptions) *Tracer {
	t.Helper()
	tr, err := newTracer(opts, test)
	if errors.Is(err, ErrUnsupported) {
		t.Skipf("SKIPPING: eBPF tracing is not available here: %v", err)
	}
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return tr
}

// recorder runs Read in the background and keeps copies of every event.
type recorder struct {
	mu     sync.Mutex
	events []Event
	added  chan struct{}
	cancel context.CancelFunc
	done   chan error
}

func record(t testing.TB, tr *Tracer) *recorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{added: make(chan struct{}, 1), cancel: cancel, done: make(chan error, 1)}
	go func() {
		r.done <- tr.Read(ctx, func(ev *Event) {
			r.mu.Lock()
			r.events = append(r.events, *ev)
			r.mu.Unlock()
			select {
			case r.added <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-r.done; err != nil {
			t.Errorf("Read: %v", err)
		}
	})
	return r
}

// wait returns the first event matching match, failing after 5 s.
func (r *recorder) wait(t testing.TB, what string, match func(*Event) bool) Event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		if ev, ok := r.find(match); ok {
			return ev
		}
		select {
		case <-r.added:
		case <-deadline:
			t.Fatalf("no event for %s within 5s", what)
		}
	}
}

func (r *recorder) find(match func(*Event) bool) (Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.events {
		if match(&r.events[i]) {
			return r.events[i], true
		}
	}
	return Event{}, false
}

func (r *recorder) count(match func(*Event) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for i := range r.events {
		if match(&r.events[i]) {
			n++
		}
	}
	return n
}

// endpoint matches events of the socket with the given local and peer ports.
func endpoint(kind Kind, local, peer netip.AddrPort) func(*Event) bool {
	return func(ev *Event) bool {
		return ev.Kind == kind && ev.LocalAddr == local.Addr() && ev.LocalPort == local.Port() &&
			ev.PeerAddr == peer.Addr() && ev.PeerPort == peer.Port()
	}
}

func addrPort(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// exchange sends toServer bytes from client to server and toClient bytes
// back, each side reading everything the other sent, then closes: first the
// side named by clientClosesFirst, then the other after reading EOF.
func exchange(t testing.TB, client, server net.Conn, toServer, toClient int, clientClosesFirst bool) {
	t.Helper()
	errs := make(chan error, 2)
	side := func(c net.Conn, send, recv int, closeFirst bool) {
		go func() {
			if _, err := c.Write(make([]byte, send)); err != nil {
				errs <- err
				return
			}
			if _, err := io.ReadFull(c, make([]byte, recv)); err != nil {
				errs <- fmt.Errorf("reading %d bytes: %w", recv, err)
				return
			}
			if !closeFirst {
				// Wait for the peer's FIN before closing.
				if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
					if err == nil {
						err = errors.New("no error")
					}
					errs <- fmt.Errorf("want EOF, got %d bytes and %w", n, err)
					return
				}
			}
			errs <- c.Close()
		}()
	}
	side(client, toServer, toClient, clientClosesFirst)
	side(server, toClient, toServer, !clientClosesFirst)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// connectPair listens with listen, dials the listener's port with dial and
// returns both ends; the listener is closed at cleanup.
func connectPair(t testing.TB, listen func() (net.Listener, error), dial func(port uint16) (net.Conn, error)) (client, server net.Conn) {
	t.Helper()
	ln, err := listen()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err = dial(addrPort(ln.Addr()).Port())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	return client, server
}

// dialDualStack connects from an AF_INET6 socket to the v4-mapped form of
// an IPv4 address, as a dual-stack client does.
func dialDualStack(v4 netip.Addr, port uint16) (net.Conn, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "dualstack")
	defer f.Close()
	if err := unix.Connect(fd, &unix.SockaddrInet6{Addr: netip.AddrFrom16(v4.As16()).As16(), Port: int(port)}); err != nil {
		return nil, err
	}
	return net.FileConn(f)
}

// netnsInode is the inode of a network namespace file.
func netnsInode(t testing.TB, path string) uint32 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return uint32(st.Ino)
}

// inNetns runs f on a thread switched into the named network namespace,
// then switches the thread back to the namespace it came from before other
// goroutines may run on it again. If it cannot switch back, the thread stays
// locked and is discarded when f's goroutine ends, so no other goroutine ever
// runs in that namespace. Switching back matters for the main thread: the
// runtime cannot end it, it parks it forever still in the namespace, and
// /proc/self/ns/net (the main thread's) would then name that namespace
// instead of the test's for the rest of the test binary.
func inNetns(t testing.TB, name string, f func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			done <- err
			return
		}
		defer own.Close()
		ns, err := os.Open("/var/run/netns/" + name)
		if err != nil {
			done <- err
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		f()
		if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns back from %s: %w", name, err)
			return
		}
		runtime.UnlockOSThread()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// vethPair creates two network namespaces joined by a veth pair, with
// 10.200.<n>.1 and fd00:200::1 in the first and .2 / ::2 in the second.
// Both are deleted at cleanup.
func vethPair(t testing.TB) (nsA, nsB string, a4, b4, a6, b6 netip.Addr) {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("SKIPPING: iproute2 'ip' not installed: %v", err)
	}
	id := os.Getpid() % 250
	nsA, nsB = fmt.Sprintf("flowattr-a-%d", os.Getpid()), fmt.Sprintf("flowattr-b-%d", os.Getpid())
	vethA, vethB := fmt.Sprintf("fa%d", os.Getpid()), fmt.Sprintf("fb%d", os.Getpid())
	a4 = netip.AddrFrom4([4]byte{10, 200, byte(id), 1})
	b4 = netip.AddrFrom4([4]byte{10, 200, byte(id), 2})
	a6, b6 = netip.MustParseAddr("fd00:200::1"), netip.MustParseAddr("fd00:200::2")
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("netns", "add", nsA)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", nsA).Run() })
	run("netns", "add", nsB)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", nsB).Run() })
	run("link", "add", vethA, "netns", nsA, "type", "veth", "peer", "name", vethB, "netns", nsB)
	for _, side := range []struct{ ns, dev, v4, v6 string }{
		{nsA, vethA, a4.String(), a6.String()},
		{nsB, vethB, b4.String(), b6.String()},
	} {
		run("-n", side.ns, "addr", "add", side.v4+"/24", "dev", side.dev)
		run("-n", side.ns, "addr", "add", side.v6+"/64", "dev", side.dev, "nodad")
		run("-n", side.ns, "link", "set", side.dev, "up")
		run("-n", side.ns, "link", "set", "lo", "up")
	}
	return nsA, nsB, a4, b4, a6, b6
}

// The tracefs mount points that cilium/ebpf looks for, and the tracepoint
// the classic fallback attaches to, relative to either.
const (
	tracefsPath       = "/sys/kernel/tracing"
	debugTracefsPath  = "/sys/kernel/debug/tracing"
	stateChangeTpPath = "events/sock/inet_sock_set_state"
)

// ensureTracefs makes the classic inet_sock_set_state tracepoint reachable
// through tracefs. If neither mount point has it, it mounts tracefs at
// /sys/kernel/tracing (as `mount -t tracefs nodev /sys/kernel/tracing`
// does, which needs root) and unmounts it at cleanup, so that a fresh
// machine or CI runner without tracefs mounted tests the fallback too; a
// tracefs that was already mounted is left alone. It skips, saying why,
// only when tracefs cannot be mounted or the kernel has no such tracepoint.
//
// cilium/ebpf looks tracefs up once per process and remembers the answer,
// so it must be mounted before anything in the test binary attaches a
// classic tracepoint: nothing else in this package does unless tp_btf is
// missing, and the mount point is the same on every run.
func ensureTracefs(t testing.TB) {
	t.Helper()
	for _, dir := range []string{tracefsPath, debugTracefsPath} {
		if _, err := os.Stat(filepath.Join(dir, stateChangeTpPath)); err == nil {
			return
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(tracefsPath, &st); err == nil && st.Type == unix.TRACEFS_MAGIC {
		t.Skipf("SKIPPING the classic tracepoint fallback: tracefs is mounted at %s but has no %s (kernel without the sock:inet_sock_set_state tracepoint?)",
			tracefsPath, stateChangeTpPath)
	}
	if err := unix.Mount("nodev", tracefsPath, "tracefs", 0, ""); err != nil {
		t.Skipf("SKIPPING the classic tracepoint fallback: tracefs is not mounted and mounting it at %s failed (euid %d; needs root or CAP_SYS_ADMIN): %v",
			tracefsPath, os.Geteuid(), err)
	}
	t.Logf("mounted tracefs at %s for this test", tracefsPath)
	t.Cleanup(func() {
		err := unix.Unmount(tracefsPath, 0)
		if errors.Is(err, unix.EBUSY) {
			// Something still has a file open in it: detach it now, the
			// kernel finishes the unmount when that file is closed.
			t.Logf("tracefs at %s busy, detaching it lazily", tracefsPath)
			err = unix.Unmount(tracefsPath, unix.MNT_DETACH)
		}
		if err != nil {
			t.Errorf("unmounting the tracefs this test mounted at %s: %v", tracefsPath, err)
		}
	})
	if _, err := os.Stat(filepath.Join(tracefsPath, stateChangeTpPath)); err != nil {
		t.Skipf("SKIPPING the classic tracepoint fallback: the kernel has no sock:inet_sock_set_state tracepoint in tracefs: %v", err)
	}
}
