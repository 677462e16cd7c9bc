package tracer

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The byte counts are deliberately not multiples of any segment size.
const (
	clientPayload = 123457
	serverPayload = 65539
)

// checkClosed asserts the closed records of both ends of one connection.
func checkClosed(t *testing.T, rec *recorder, clientEnd, serverEnd netip.AddrPort, before, after time.Time, netns uint32) {
	t.Helper()
	c := rec.wait(t, "client close", endpoint(KindClosed, clientEnd, serverEnd))
	s := rec.wait(t, "server close", endpoint(KindClosed, serverEnd, clientEnd))
	for _, tc := range []struct {
		name           string
		ev             Event
		role           Role
		sent, received uint64
	}{
		{"client", c, RoleClient, clientPayload, serverPayload},
		{"server", s, RoleServer, serverPayload, clientPayload},
	} {
		ev := tc.ev
		if ev.Role != tc.role {
			t.Errorf("%s: role %v, want %v", tc.name, ev.Role, tc.role)
		}
		if ev.BytesSent != tc.sent || ev.BytesReceived != tc.received {
			t.Errorf("%s: bytes sent/received %d/%d, want %d/%d", tc.name, ev.BytesSent, ev.BytesReceived, tc.sent, tc.received)
		}
		if !ev.StartKnown || ev.Start.Before(before) || ev.End.After(after) || ev.End.Before(ev.Start) {
			t.Errorf("%s: start %v (known %v) end %v outside the test's [%v, %v]", tc.name, ev.Start, ev.StartKnown, ev.End, before, after)
		}
		if ev.PID != uint32(os.Getpid()) || ev.Comm != "tracer.test" || ev.CgroupID == 0 {
			t.Errorf("%s: process %d %q cgroup %d, want %d %q nonzero", tc.name, ev.PID, ev.Comm, ev.CgroupID, os.Getpid(), "tracer.test")
		}
		if ev.Err != 0 {
			t.Errorf("%s: error %v on a clean close", tc.name, ev.Err)
		}
		if ev.SegmentsSent < 3 || ev.SegmentsReceived < 3 || ev.SRTT <= 0 {
			t.Errorf("%s: segments %d/%d srtt %v: implausible", tc.name, ev.SegmentsSent, ev.SegmentsReceived, ev.SRTT)
		}
		if ev.NetnsInode != netns {
			t.Errorf("%s: netns inode %d, want %d", tc.name, ev.NetnsInode, netns)
		}
		if ev.Cookie == 0 {
			t.Errorf("%s: no socket cookie", tc.name)
		}
	}
	if c.Cookie == s.Cookie {
		t.Errorf("both ends share cookie %d", c.Cookie)
	}
}

func TestLoopback(t *testing.T) {
	tr := startTracer(t, Options{})
	rec := record(t, tr)
	netns := netnsInode(t, "/proc/self/ns/net")
	loop4, loop6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")

	dialTo := func(network string, addr netip.Addr) func(uint16) (net.Conn, error) {
		return func(port uint16) (net.Conn, error) {
			return net.Dial(network, netip.AddrPortFrom(addr, port).String())
		}
	}
	listenOn := func(network, addr string) func() (net.Listener, error) {
		return func() (net.Listener, error) { return net.Listen(network, addr) }
	}
	for _, tc := range []struct {
		name         string
		listen       func() (net.Listener, error)
		dial         func(uint16) (net.Conn, error)
		clientCloses bool
	}{
		{"ipv4/client-closes", listenOn("tcp4", "127.0.0.1:0"), dialTo("tcp4", loop4), true},
		{"ipv4/server-closes", listenOn("tcp4", "127.0.0.1:0"), dialTo("tcp4", loop4), false},
		{"ipv6/client-closes", listenOn("tcp6", "[::1]:0"), dialTo("tcp6", loop6), true},
		{"ipv6/server-closes", listenOn("tcp6", "[::1]:0"), dialTo("tcp6", loop6), false},
		// A dual-stack AF_INET6 listener accepting IPv4, and an AF_INET6
		// client connecting to ::ffff:127.0.0.1.
		{"dual-stack-server", listenOn("tcp", ":0"), dialTo("tcp4", loop4), true},
		{"dual-stack-client", listenOn("tcp4", "127.0.0.1:0"), func(port uint16) (net.Conn, error) { return dialDualStack(loop4, port) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := time.Now()
			client, server := connectPair(t, tc.listen, tc.dial)
			clientEnd, serverEnd := addrPort(client.LocalAddr()), addrPort(client.RemoteAddr())
			exchange(t, client, server, clientPayload, serverPayload, tc.clientCloses)
			// Closes complete in softirq shortly after the last close().
			rec.wait(t, "server close", endpoint(KindClosed, serverEnd, clientEnd))
			rec.wait(t, "client close", endpoint(KindClosed, clientEnd, serverEnd))
			after := time.Now()
			checkClosed(t, rec, clientEnd, serverEnd, before, after, netns)
		})
	}
}

func TestVethNamespaces(t *testing.T) {
	tr := startTracer(t, Options{})
	rec := record(t, tr)
	nsA, nsB, a4, b4, a6, b6 := vethPair(t)
	inodeA, inodeB := netnsInode(t, "/var/run/netns/"+nsA), netnsInode(t, "/var/run/netns/"+nsB)

	for _, tc := range []struct {
		name   string
		server netip.Addr // in nsB
		client netip.Addr // in nsA
	}{
		{"ipv4", b4, a4},
		{"ipv6", b6, a6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := time.Now()
			var ln net.Listener
			inNetns(t, nsB, func() { ln, _ = net.Listen("tcp", netip.AddrPortFrom(tc.server, 0).String()) })
			if ln == nil {
				t.Fatalf("listening on %v in %s failed", tc.server, nsB)
			}
			client, server := connectPair(t, func() (net.Listener, error) { return ln, nil }, func(port uint16) (conn net.Conn, err error) {
				inNetns(t, nsA, func() { conn, err = net.Dial("tcp", netip.AddrPortFrom(tc.server, port).String()) })
				return conn, err
			})
			clientEnd, serverEnd := addrPort(client.LocalAddr()), addrPort(client.RemoteAddr())
			if clientEnd.Addr() != tc.client {
				t.Fatalf("client bound to %v, want %v", clientEnd, tc.client)
			}
			exchange(t, client, server, clientPayload, serverPayload, true)
			rec.wait(t, "server close", endpoint(KindClosed, serverEnd, clientEnd))
			rec.wait(t, "client close", endpoint(KindClosed, clientEnd, serverEnd))
			after := time.Now()

			c := rec.wait(t, "client close", endpoint(KindClosed, clientEnd, serverEnd))
			s := rec.wait(t, "server close", endpoint(KindClosed, serverEnd, clientEnd))
			if c.NetnsInode != inodeA || s.NetnsInode != inodeB {
				t.Errorf("netns inodes client %d server %d, want %d %d", c.NetnsInode, s.NetnsInode, inodeA, inodeB)
			}
			for _, ev := range []Event{c, s} {
				if ev.Start.Before(before) || ev.End.After(after) {
					t.Errorf("%v: start %v end %v outside [%v, %v]", ev.Role, ev.Start, ev.End, before, after)
				}
			}
			if c.Role != RoleClient || s.Role != RoleServer {
				t.Errorf("roles %v %v", c.Role, s.Role)
			}
			if c.BytesSent != clientPayload || c.BytesReceived != serverPayload || s.BytesSent != serverPayload || s.BytesReceived != clientPayload {
				t.Errorf("bytes client %d/%d server %d/%d, want %d/%d and the reverse",
					c.BytesSent, c.BytesReceived, s.BytesSent, s.BytesReceived, clientPayload, serverPayload)
			}
			if s.PID != uint32(os.Getpid()) || c.PID != uint32(os.Getpid()) {
				t.Errorf("pids client %d server %d, want %d", c.PID, s.PID, os.Getpid())
			}
		})
	}
}

func TestFailedConnect(t *testing.T) {
	tr := startTracer(t, Options{})
	rec := record(t, tr)
	// A port nothing listens on: bind a listener, note its port, close it.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := addrPort(ln.Addr())
	ln.Close()

	before := time.Now()
	if _, err := net.Dial("tcp4", closed.String()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %v: %v, want ECONNREFUSED", closed, err)
	}
	ev := rec.wait(t, "failed connect", func(ev *Event) bool {
		return ev.Kind == KindFailed && ev.PeerAddr == closed.Addr() && ev.PeerPort == closed.Port()
	})
	after := time.Now()
	if ev.Err != syscall.ECONNREFUSED || ev.Role != RoleClient {
		t.Errorf("failed connect: err %v role %v, want ECONNREFUSED client", ev.Err, ev.Role)
	}
	if ev.PID != uint32(os.Getpid()) || !ev.StartKnown || ev.Start.Before(before) || ev.End.After(after) {
		t.Errorf("failed connect: pid %d start %v end %v outside [%v, %v]", ev.PID, ev.Start, ev.End, before, after)
	}
	if ev.BytesSent != 0 || ev.BytesReceived != 0 {
		t.Errorf("failed connect moved bytes: %d/%d", ev.BytesSent, ev.BytesReceived)
	}
}

// TestConnectedEvent: a client connection to a peer in NATPrefixes is
// reported once when established, with the connection's birth, besides its
// close; other peers, the server side and a connect that fails are not.
func TestConnectedEvent(t *testing.T) {
	nsA, nsB, a4, b4, _, b6 := vethPair(t)
	// fd00:200::/127 holds b6 (::2) but not a6 (::1): the lookup is by
	// prefix.
	tr := startTracer(t, Options{NATPrefixes: []netip.Prefix{netip.PrefixFrom(b4, 32), netip.MustParsePrefix("fd00:200::2/127")}})
	rec := record(t, tr)
	listen := func(addr netip.Addr) net.Listener {
		var ln net.Listener
		inNetns(t, nsB, func() { ln, _ = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String()) })
		if ln == nil {
			t.Fatalf("listening on %v in %s failed", addr, nsB)
		}
		return ln
	}
	for _, tc := range []struct {
		name      string
		ns        string
		server    netip.Addr // listening in nsB
		connected bool
	}{
		{"ipv4 in prefix", nsA, b4, true},
		{"ipv6 in prefix", nsA, b6, true},
		// The reverse direction: the peer a4 is in no prefix.
		{"ipv4 outside", nsB, a4, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serverNs, clientNs := nsB, nsA
			if tc.ns == nsB {
				serverNs, clientNs = nsA, nsB
			}
			before := time.Now()
			var ln net.Listener
			inNetns(t, serverNs, func() { ln, _ = net.Listen("tcp", netip.AddrPortFrom(tc.server, 0).String()) })
			if ln == nil {
				t.Fatalf("listening on %v failed", tc.server)
			}
			client, server := connectPair(t, func() (net.Listener, error) { return ln, nil }, func(port uint16) (conn net.Conn, err error) {
				inNetns(t, clientNs, func() { conn, err = net.Dial("tcp", netip.AddrPortFrom(tc.server, port).String()) })
				return conn, err
			})
			clientEnd, serverEnd := addrPort(client.LocalAddr()), addrPort(client.RemoteAddr())
			exchange(t, client, server, clientPayload, serverPayload, true)
			c := rec.wait(t, "client close", endpoint(KindClosed, clientEnd, serverEnd))
			rec.wait(t, "server close", endpoint(KindClosed, serverEnd, clientEnd))

			if n := rec.count(endpoint(KindConnected, serverEnd, clientEnd)); n != 0 {
				t.Errorf("%d connected events of the server side, want none", n)
			}
			n := rec.count(endpoint(KindConnected, clientEnd, serverEnd))
			if !tc.connected {
				if n != 0 {
					t.Errorf("%d connected events for a peer outside the prefixes, want none", n)
				}
				return
			}
			if n != 1 {
				t.Fatalf("%d connected events of the client, want 1", n)
			}
			ev, _ := rec.find(endpoint(KindConnected, clientEnd, serverEnd))
			if ev.Role != RoleClient || !ev.StartKnown || ev.Start != c.Start || ev.Cookie != c.Cookie || ev.PID != uint32(os.Getpid()) {
				t.Errorf("connected event %+v does not carry the birth of the close %+v", ev, c)
			}
			if ev.End.Before(ev.Start) || ev.End.After(c.End) || ev.Start.Before(before) || ev.BytesSent != 0 {
				t.Errorf("connected event: start %v end %v bytes %d; close at %v, test began %v", ev.Start, ev.End, ev.BytesSent, c.End, before)
			}
		})
	}

	t.Run("failed connect", func(t *testing.T) {
		ln := listen(b4)
		closed := addrPort(ln.Addr())
		ln.Close()
		var err error
		inNetns(t, nsA, func() { _, err = net.Dial("tcp4", closed.String()) })
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial %v: %v, want ECONNREFUSED", closed, err)
		}
		rec.wait(t, "failed connect", func(ev *Event) bool {
			return ev.Kind == KindFailed && ev.PeerAddr == b4 && ev.PeerPort == closed.Port()
		})
		if n := rec.count(func(ev *Event) bool { return ev.Kind == KindConnected && ev.PeerPort == closed.Port() }); n != 0 {
			t.Errorf("%d connected events for a connect that failed, want none", n)
		}
	})
}

func TestListenerCloseIsNoFlow(t *testing.T) {
	tr := startTracer(t, Options{})
	rec := record(t, tr)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := addrPort(ln.Addr()).Port()
	ln.Close()

	// The ring buffer is ordered: once a later connection's records are
	// read, a record of the listener would have been read too.
	client, server := connectPair(t, func() (net.Listener, error) { return net.Listen("tcp4", "127.0.0.1:0") },
		func(p uint16) (net.Conn, error) {
			return net.Dial("tcp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p).String())
		})
	clientEnd, serverEnd := addrPort(client.LocalAddr()), addrPort(client.RemoteAddr())
	exchange(t, client, server, 1, 1, true)
	rec.wait(t, "sentinel close", endpoint(KindClosed, serverEnd, clientEnd))
	if n := rec.count(func(ev *Event) bool { return ev.LocalPort == port || ev.PeerPort == port }); n != 0 {
		t.Errorf("closing a listener produced %d records", n)
	}
}

func TestActiveLongLived(t *testing.T) {
	tr := startTracer(t, Options{})
	rec := record(t, tr)
	client, server := connectPair(t, func() (net.Listener, error) { return net.Listen("tcp4", "127.0.0.1:0") },
		func(p uint16) (net.Conn, error) {
			return net.Dial("tcp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p).String())
		})
	clientEnd, serverEnd := addrPort(client.LocalAddr()), addrPort(client.RemoteAddr())

	// Request/response rounds: when the client has read the response, the
	// response's ACK of the request has been processed, so the client's
	// counters are exact.
	round := func(req, resp int) {
		t.Helper()
		if _, err := client.Write(make([]byte, req)); err != nil {
			t.Fatal(err)
		}
		if err := readFull(server, req); err != nil {
			t.Fatal(err)
		}
		if _, err := server.Write(make([]byte, resp)); err != nil {
			t.Fatal(err)
		}
		if err := readFull(client, resp); err != nil {
			t.Fatal(err)
		}
	}
	active := func() (clientEv, serverEv Event) {
		t.Helper()
		var found int
		before := time.Now()
		err := tr.Active(context.Background(), func(ev *Event) {
			switch {
			case endpoint(KindActive, clientEnd, serverEnd)(ev):
				clientEv = *ev
				found++
			case endpoint(KindActive, serverEnd, clientEnd)(ev):
				serverEv = *ev
				found++
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if found != 2 {
			t.Fatalf("Active reported %d of the connection's 2 sockets", found)
		}
		if clientEv.End.Before(before) || clientEv.End.After(time.Now()) {
			t.Errorf("active observation time %v outside the pass", clientEv.End)
		}
		return clientEv, serverEv
	}

	round(1000, 7)
	c1, s1 := active()
	if c1.BytesSent != 1000 || c1.BytesReceived != 7 || !c1.StartKnown || c1.Role != RoleClient || s1.Role != RoleServer {
		t.Errorf("first pass: client %+v", c1)
	}
	round(5000, 3)
	c2, s2 := active()
	if c2.BytesSent != 6000 || c2.BytesReceived != 10 || c2.Cookie != c1.Cookie || s2.Cookie != s1.Cookie || !c2.Start.Equal(c1.Start) {
		t.Errorf("second pass: client %+v, first %+v", c2, c1)
	}
	if s2.BytesReceived != 6000 {
		t.Errorf("second pass: server received %d, want 6000", s2.BytesReceived)
	}
	client.Close()
	server.Close()
	final := rec.wait(t, "client close", endpoint(KindClosed, clientEnd, serverEnd))
	if final.Cookie != c1.Cookie || final.BytesSent != 6000 || final.BytesReceived != 10 {
		t.Errorf("final record %+v does not continue the interim ones (cookie %d)", final, c1.Cookie)
	}
}

// readFull reads n bytes from c.
func readFull(c net.Conn, n int) error {
	_, err := io.ReadFull(c, make([]byte, n))
	return err
}

// Connections opened before the tracer: one closed before any Active pass,
// one seeded by a pass. Both closes are reported with StartKnown false.
func TestConnectionsOlderThanTracer(t *testing.T) {
	listen := func() (net.Listener, error) { return net.Listen("tcp4", "127.0.0.1:0") }
	dial := func(p uint16) (net.Conn, error) {
		return net.Dial("tcp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p).String())
	}
	seededClient, seededServer := connectPair(t, listen, dial)
	unseenClient, unseenServer := connectPair(t, listen, dial)
	for _, c := range []net.Conn{seededClient, seededServer, unseenClient, unseenServer} {
		if _, err := c.Write(make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []net.Conn{seededClient, seededServer, unseenClient, unseenServer} {
		if err := readFull(c, 100); err != nil {
			t.Fatal(err)
		}
	}
	seededEnd, seededPeer := addrPort(seededClient.LocalAddr()), addrPort(seededClient.RemoteAddr())
	unseenEnd, unseenPeer := addrPort(unseenClient.LocalAddr()), addrPort(unseenClient.RemoteAddr())

	started := time.Now()
	tr := startTracer(t, Options{})
	rec := record(t, tr)
	exchange(t, unseenClient, unseenServer, 0, 0, true)
	var interim []Event
	if err := tr.Active(context.Background(), func(ev *Event) {
		if endpoint(KindActive, seededEnd, seededPeer)(ev) || endpoint(KindActive, seededPeer, seededEnd)(ev) {
			interim = append(interim, *ev)
		}
	}); err != nil {
		t.Fatal(err)
	}
	seenBy := time.Now()
	if len(interim) != 2 {
		t.Fatalf("Active found %d of the 2 older sockets", len(interim))
	}
	for _, ev := range interim {
		if ev.StartKnown || ev.Start.Before(started) || ev.Start.After(seenBy) {
			t.Errorf("seeded %v: start %v known %v, want first-seen time in [%v, %v]", ev.Role, ev.Start, ev.StartKnown, started, seenBy)
		}
	}

	exchange(t, seededClient, seededServer, 0, 0, true)
	c := rec.wait(t, "seeded client close", endpoint(KindClosed, seededEnd, seededPeer))
	s := rec.wait(t, "seeded server close", endpoint(KindClosed, seededPeer, seededEnd))
	for _, ev := range []Event{c, s} {
		if ev.StartKnown || ev.Start.After(seenBy) || ev.BytesSent != 100 || ev.BytesReceived != 100 {
			t.Errorf("seeded close %+v: want StartKnown false, start by %v, 100 bytes each way", ev, seenBy)
		}
	}
	// The iterator tells the server by the listener on its local port.
	if c.Role != RoleClient || s.Role != RoleServer {
		t.Errorf("seeded roles %v %v, want client server", c.Role, s.Role)
	}
	u := rec.wait(t, "unseen client close", endpoint(KindClosed, unseenEnd, unseenPeer))
	if u.StartKnown || !u.Start.Equal(u.End) {
		t.Errorf("unseen close: start %v (known %v) end %v, want first seen at close", u.Start, u.StartKnown, u.End)
	}
	if u.BytesReceived != 100 {
		t.Errorf("unseen close received %d, want 100", u.BytesReceived)
	}
}

func TestLossCounters(t *testing.T) {
	// The smallest ring holds a page: about 28 records of 144 bytes with
	// headers. Nothing reads it, so most of 40 connections' 80 records are
	// dropped. The birth map holds 4 of the 80 sockets.
	tr := startTracer(t, Options{RingBufferSize: os.Getpagesize(), MaxConnections: 4})
	const conns = 40
	var pairs [][2]net.Conn
	for range conns {
		client, server := connectPair(t, func() (net.Listener, error) { return net.Listen("tcp4", "127.0.0.1:0") },
			func(p uint16) (net.Conn, error) {
				return net.Dial("tcp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p).String())
			})
		pairs = append(pairs, [2]net.Conn{client, server})
	}
	for _, p := range pairs {
		exchange(t, p[0], p[1], 1, 1, true)
	}
	capacity := os.Getpagesize() / (eventSize + 8)
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := tr.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.LostEvents >= uint64(2*conns-capacity) {
			if st.RingBytesSize != os.Getpagesize() || st.RingBytesUsed < capacity*(eventSize+8)/2 {
				t.Errorf("ring fill %d of %d: want mostly full", st.RingBytesUsed, st.RingBytesSize)
			}
			if st.BirthMapFull < 2*conns-4 {
				t.Errorf("birth map full %d times, want >= %d", st.BirthMapFull, 2*conns-4)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: want >= %d lost events", st, 2*conns-capacity)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestListenerMapFullIsCounted runs an Active pass over more listening
// sockets than the listener set holds.
func TestListenerMapFullIsCounted(t *testing.T) {
	tr := startTracerWith(t, Options{}, testOptions{maxListeners: 2})
	const listeners = 5
	for range listeners {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
	}
	if err := tr.Active(context.Background(), func(*Event) {}); err != nil {
		t.Fatalf("Active: %v", err)
	}
	st, err := tr.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.ListenerMapFull < listeners-2 {
		t.Errorf("listener map full %d times, want >= %d", st.ListenerMapFull, listeners-2)
	}
}

func TestClassicTracepointFallback(t *testing.T) {
	ensureTracefs(t)
	tr := startTracerWith(t, Options{}, testOptions{classicTracepoint: true})
	if h := tr.Hooks(); h.StateChange != "tracepoint" {
		t.Fatalf("hooks %+v, want the classic tracepoint", h)
	}
	rec := record(t, tr)
	before := time.Now()
	client, server := connectPair(t, func() (net.Listener, error) { return net.Listen("tcp6", "[::1]:0") },
		func(p uint16) (net.Conn, error) {
			return net.Dial("tcp6", netip.AddrPortFrom(netip.IPv6Loopback(), p).String())
		})
	clientEnd, serverEnd := addrPort(client.LocalAddr()), addrPort(client.RemoteAddr())
	exchange(t, client, server, clientPayload, serverPayload, false)
	rec.wait(t, "client close", endpoint(KindClosed, clientEnd, serverEnd))
	rec.wait(t, "server close", endpoint(KindClosed, serverEnd, clientEnd))
	checkClosed(t, rec, clientEnd, serverEnd, before, time.Now(), netnsInode(t, "/proc/self/ns/net"))
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		ok   bool
	}{
		{Options{}, true},
		{Options{RingBufferSize: 1 << 20, MaxConnections: 10}, true},
		{Options{RingBufferSize: 3 << 20}, false},
		{Options{RingBufferSize: 1024}, false},
		{Options{RingBufferSize: 2 * MaxRingBufferSize}, false},
		{Options{MaxConnections: -1}, false},
		{Options{MaxConnections: MaxMaxConnections + 1}, false},
		{Options{NATPrefixes: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("fd00:96::/108")}}, true},
		{Options{NATPrefixes: []netip.Prefix{{}}}, false},
		{Options{NATPrefixes: make([]netip.Prefix, MaxNATPrefixes+1)}, false},
	} {
		if err := tc.opts.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: Validate() = %v, want ok=%v", tc.opts, err, tc.ok)
		}
		if _, err := New(tc.opts); !tc.ok && (err == nil || errors.Is(err, ErrUnsupported)) {
			t.Errorf("%+v: New = %v, want a validation error", tc.opts, err)
		}
	}
}

func TestCloseEndsRead(t *testing.T) {
	tr, err := New(Options{})
	if errors.Is(err, ErrUnsupported) {
		t.Skipf("SKIPPING: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- tr.Read(context.Background(), func(*Event) {}) }()
	time.Sleep(10 * time.Millisecond) // let Read block; it must return either way
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("Read after Close: %v", err)
	}
	if _, err := tr.Stats(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Stats after Close: %v", err)
	}
	if err := tr.Active(context.Background(), func(*Event) {}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Active after Close: %v", err)
	}
}

// TestCloseRateNoLoss makes connections on loopback from 8 goroutines as
// fast as they go for a second while the tracer reads, and requires every
// socket's close record with the default ring and birth map.
func TestCloseRateNoLoss(t *testing.T) {
	run := runCloses(t, Options{}, 8, 0, time.Second)
	t.Logf("%d connections in %v: %.0f closes/s, %d records, %d lost, %d not tracked, %d missed",
		run.conns, run.elapsed, float64(run.closes())/run.elapsed.Seconds(), run.records, run.lost, run.birthMapFull, run.missed)
	if run.losses() != 0 || run.unaccounted != 0 || run.records != run.closes() {
		t.Errorf("%d records of %d closes, %d lost, %d not tracked, %d missed, %d unaccounted: want every close and no loss",
			run.records, run.closes(), run.lost, run.birthMapFull, run.missed, run.unaccounted)
	}
}

// TestReadFollowsWallClockSteps steps the wall clock the tracer reads by an
// hour after it started: records Read decodes afterwards carry times on the
// new scale, without an Active pass, and their boot-clock start does not
// move.
func TestReadFollowsWallClockSteps(t *testing.T) {
	tr := startTracer(t, Options{})
	const step = time.Hour
	tr.clock.wallNanos = func() int64 { return time.Now().Add(step).UnixNano() }
	tr.clock.refreshEvery = 0
	rec := record(t, tr)

	before, bootBefore := time.Now().Add(step), BootTime()
	client, server := connectPair(t,
		func() (net.Listener, error) { return net.Listen("tcp4", "127.0.0.1:0") },
		func(port uint16) (net.Conn, error) {
			return net.Dial("tcp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String())
		})
	clientEnd, serverEnd := addrPort(client.LocalAddr()), addrPort(client.RemoteAddr())
	exchange(t, client, server, clientPayload, serverPayload, true)
	ev := rec.wait(t, "client close", endpoint(KindClosed, clientEnd, serverEnd))
	after, bootAfter := time.Now().Add(step), BootTime()
	if ev.Start.Before(before) || ev.End.After(after) || ev.End.Before(ev.Start) {
		t.Errorf("start %v end %v outside [%v, %v]: not on the stepped clock", ev.Start, ev.End, before, after)
	}
	if ev.StartBoot < bootBefore || ev.StartBoot > bootAfter {
		t.Errorf("boot-clock start %v outside [%v, %v]: the step must not move it", ev.StartBoot, bootBefore, bootAfter)
	}
}

// TestInTimeNamespace runs TestLoopback and TestReadFollowsWallClockSteps
// again in a time namespace (time_namespaces(7)) whose boot clock reads 3000 s
// more than the host's: the kernel stamps events on the host's boot clock,
// and the tracer must convert them all the same.
func TestInTimeNamespace(t *testing.T) {
	if os.Getenv("FLOWATTR_IN_TIME_NAMESPACE") != "" {
		t.Skip("already in the time namespace")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skipf("SKIPPING: no unshare(1) to make a time namespace: %v", err)
	}
	if err := exec.Command(unshare, "--time", "--fork", "--boottime", "3000", "true").Run(); err != nil {
		t.Skipf("SKIPPING: this kernel or unshare(1) cannot make a time namespace: %v", err)
	}
	cmd := exec.Command(unshare, "--time", "--fork", "--boottime", "3000",
		os.Args[0], "-test.run", "^(TestLoopback|TestReadFollowsWallClockSteps)$", "-test.count", "1", "-test.v")
	cmd.Env = append(os.Environ(), "FLOWATTR_IN_TIME_NAMESPACE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in a time namespace: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestReadFollowsWallClockSteps") {
		t.Errorf("in a time namespace the tests did not run:\n%s", out)
	}
}
