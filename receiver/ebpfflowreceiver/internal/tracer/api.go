// Package tracer observes TCP connections with eBPF and reports each one as
// an Event: once when it closes (or fails to connect), and on demand while it
// is open (Active). It is the kernel-facing half of the ebpfflow receiver; the
// receiver turns Events into flow log records.
//
// The BPF programs hook the inet_sock_set_state tracepoint (tp_btf, or the
// classic tracepoint where tp_btf does not load) to record each socket's
// birth (4-tuple, role, start time, owning process) and to emit a record to a
// ring buffer on close. An iter/tcp socket iterator reports open connections,
// including those opened before the tracer started, which it seeds so that
// their close is reported too.
//
// The tracer works on Linux only. This file and the other files without an
// OS suffix hold the API, which builds everywhere; the implementation is in
// the _linux.go files, and on other systems New fails with ErrUnsupported.
package tracer

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"time"
)

// ErrUnsupported is wrapped by New's error when the kernel or the process
// cannot run the tracer: not Linux, no BPF, no BTF, missing privileges
// (CAP_BPF and CAP_PERFMON, or root) or memlock limits. The wrapping error
// says which.
var ErrUnsupported = errors.New("ebpf flow tracing unsupported")

// Kind says what an Event reports.
type Kind uint8

const (
	// KindClosed is a connection that was established and has closed.
	KindClosed Kind = iota + 1
	// KindFailed is an outgoing connection that never got established
	// (SYN_SENT -> CLOSE); Err says why, typically ECONNREFUSED or ETIMEDOUT.
	KindFailed
	// KindActive is an interim report of a connection that is still open;
	// counters are the values at End.
	KindActive
	// KindConnected reports a client connection to a peer in
	// Options.NATPrefixes once, when it is established: the kernel's
	// connection tracking certainly holds its address translation then.
	// End is that time; the counters are zero. Its close is reported as
	// usual.
	KindConnected
)

// String returns "closed", "failed" or "active".
func (k Kind) String() string {
	switch k {
	case KindClosed:
		return "closed"
	case KindFailed:
		return "failed"
	case KindActive:
		return "active"
	case KindConnected:
		return "connected"
	}
	return "unknown"
}

// Role says which side of the connection this host is.
type Role uint8

const (
	// RoleUnknown is a socket whose birth was not seen and whose role
	// cannot be inferred.
	RoleUnknown Role = iota
	// RoleClient is the side that sent the SYN (went through SYN_SENT).
	RoleClient
	// RoleServer is the side that accepted (went through SYN_RECV).
	RoleServer
)

// String returns "client", "server" or "unknown".
func (r Role) String() string {
	switch r {
	case RoleClient:
		return "client"
	case RoleServer:
		return "server"
	}
	return "unknown"
}

// Event is one TCP connection as seen from this host.
type Event struct {
	Kind Kind
	Role Role

	// LocalAddr and PeerAddr are canonical: IPv4 peers of dual-stack IPv6
	// sockets are unmapped to plain IPv4.
	LocalAddr, PeerAddr netip.Addr
	LocalPort, PeerPort uint16

	// Start is when the connection was born (SYN sent or received). When
	// StartKnown is false the socket predates the tracer and Start is when
	// the tracer first saw it.
	Start      time.Time
	StartKnown bool
	// StartBoot is Start on the kernel's boot clock (see BootTime), which
	// steps of the wall clock do not move: Start is converted to wall-clock
	// time with the offset between the two clocks when it is read.
	StartBoot time.Duration
	// End is the close time; for KindActive the observation time.
	End time.Time

	// BytesSent is payload bytes sent and acknowledged by the peer,
	// BytesReceived payload bytes received in order; neither counts the
	// sequence numbers consumed by SYN and FIN.
	BytesSent, BytesReceived uint64
	// SegmentsSent and SegmentsReceived count TCP segments, including pure
	// ACKs and retransmissions.
	SegmentsSent, SegmentsReceived uint32
	// Retransmits counts retransmitted segments.
	Retransmits uint32
	// SRTT is the smoothed round-trip time.
	SRTT time.Duration

	// Err is the socket error (sk_err, else sk_err_soft); 0 when clean.
	Err syscall.Errno

	// PID, Comm and CgroupID identify the process that connected (client) or
	// accepted (server), taken in process context. They are zero when no
	// process was seen: a server socket closed before accept(), or a socket
	// that predates the tracer and whose owner the iterator could not tell.
	PID      uint32
	Comm     string
	CgroupID uint64
	// NetnsInode is the inode number of the socket's network namespace.
	NetnsInode uint32

	// Cookie is the socket cookie: it links the interim reports and the final
	// record of one connection.
	Cookie uint64
}

// Options configure a Tracer. Zero fields take the defaults.
type Options struct {
	// RingBufferSize is the ring buffer size in bytes: a power of two and a
	// multiple of the page size. Default DefaultRingBufferSize.
	RingBufferSize int
	// MaxConnections bounds the number of connections tracked at once (the
	// birth map). Births beyond it are counted in Stats.BirthMapFull; their
	// close is reported with StartKnown false, RoleUnknown (RoleClient for
	// a failed connect) and no process, and Active does not list them.
	// Default DefaultMaxConnections.
	MaxConnections int
	// NATPrefixes are the peer prefixes whose client connections are
	// reported once more when established (KindConnected); at most
	// MaxNATPrefixes. Empty, none is.
	NATPrefixes []netip.Prefix
}

// Defaults and bounds of Options.
const (
	DefaultRingBufferSize = 4 << 20
	DefaultMaxConnections = 1 << 16
	MaxMaxConnections     = 1 << 24
	MaxRingBufferSize     = 1 << 30
	MaxNATPrefixes        = 1024 // max_entries of nat_prefixes in bpf/flow.c
)

// Stats are the tracer's loss counters and ring buffer fill.
type Stats struct {
	// LostEvents counts records dropped because the ring buffer was full,
	// summed over CPUs.
	LostEvents uint64
	// BirthMapFull counts connections not tracked because the birth map was
	// full.
	BirthMapFull uint64
	// ListenerMapFull counts listening sockets an Active pass could not
	// note because the listener set (16384 netns and port pairs) was full,
	// summed over passes: each pass starts from an empty set, so a socket
	// left out is counted again by every pass, not once. Connections that
	// predate the tracer on their ports are then reported as clients.
	ListenerMapFull uint64
	// RecursionMisses counts runs of the tracing programs that the kernel
	// skipped because one of them was already running on that CPU (a
	// softirq state change interrupting one in process context). A skipped
	// birth reports the connection with StartKnown false; a skipped close
	// loses its record and leaves its birth entry behind. Linux 5.12 or
	// later; zero before.
	RecursionMisses uint64
	// RingBytesUsed is the number of unread bytes in the ring buffer,
	// RingBytesSize its size.
	RingBytesUsed, RingBytesSize int
}

// withDefaults returns o with its zero fields set to their defaults.
func (o Options) withDefaults() Options {
	if o.RingBufferSize == 0 {
		o.RingBufferSize = DefaultRingBufferSize
	}
	if o.MaxConnections == 0 {
		o.MaxConnections = DefaultMaxConnections
	}
	return o
}

// Validate checks opts as New does, without loading anything.
func (o Options) Validate() error {
	o = o.withDefaults()
	page := os.Getpagesize()
	switch {
	case o.RingBufferSize < page || o.RingBufferSize > MaxRingBufferSize ||
		o.RingBufferSize&(o.RingBufferSize-1) != 0:
		return fmt.Errorf("ring buffer size %d: must be a power of two between the page size (%d) and %d", o.RingBufferSize, page, MaxRingBufferSize)
	case o.MaxConnections < 0 || o.MaxConnections > MaxMaxConnections:
		return fmt.Errorf("max connections %d: must be between 1 and %d", o.MaxConnections, MaxMaxConnections)
	case len(o.NATPrefixes) > MaxNATPrefixes:
		return fmt.Errorf("%d NAT prefixes: at most %d", len(o.NATPrefixes), MaxNATPrefixes)
	}
	for _, p := range o.NATPrefixes {
		if !p.IsValid() {
			return fmt.Errorf("NAT prefix %s is not valid", p)
		}
	}
	return nil
}

// Hooks says which programs New could load and attach on this kernel.
type Hooks struct {
	// StateChange is "tp_btf" (BTF-enabled tracepoint) or "tracepoint" (the
	// classic sock/inet_sock_set_state fallback). With "tracepoint" socket
	// cookies are the kernel's where one was already generated and a
	// tracer-assigned ID (top bit set) otherwise.
	StateChange string
	// ServerProcess is true when the sock_send_length and sock_recv_length
	// BTF tracepoints are attached: they take a server socket's process at
	// its first send or receive. Without them (kernels before 6.5) server
	// sockets carry no process (PID 0).
	ServerProcess bool
	// ServerProcessError says why they are missing.
	ServerProcessError error
}
