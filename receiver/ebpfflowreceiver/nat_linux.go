package ebpfflowreceiver // import "github.com/flowattr/flowattr/receiver/ebpfflowreceiver"

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// conntrackTable queries the connection tracking of the collector's network
// namespace over netlink.
type conntrackTable struct{ conn *conntrack.Conn }

// openConntrack opens connection tracking and asks it about a connection
// that does not exist, so that a kernel without it or a collector without
// CAP_NET_ADMIN is found at start, not at every flow.
func openConntrack() (natTable, error) {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("opening a netlink socket to connection tracking: %w", err)
	}
	t := &conntrackTable{conn: c}
	probe := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	if _, err := t.Translation(probe, probe); !errors.Is(err, errNoConntrackEntry) {
		_ = c.Close()
		return nil, fmt.Errorf("connection tracking does not answer (the collector needs CAP_NET_ADMIN, and the kernel nf_conntrack_netlink): %w", err)
	}
	return t, nil
}

func (t *conntrackTable) Translation(local, peer netip.AddrPort) (netip.AddrPort, error) {
	var q conntrack.Flow
	q.TupleOrig.IP.SourceAddress = local.Addr()
	q.TupleOrig.IP.DestinationAddress = peer.Addr()
	q.TupleOrig.Proto.Protocol = unix.IPPROTO_TCP
	q.TupleOrig.Proto.SourcePort = local.Port()
	q.TupleOrig.Proto.DestinationPort = peer.Port()
	f, err := t.conn.Get(q)
	if errors.Is(err, unix.ENOENT) {
		return netip.AddrPort{}, errNoConntrackEntry
	}
	if err != nil {
		return netip.AddrPort{}, err
	}
	// The reply direction comes from where the packets were sent.
	return netip.AddrPortFrom(f.TupleReply.IP.SourceAddress.Unmap(), f.TupleReply.Proto.SourcePort), nil
}

func (t *conntrackTable) Close() error { return t.conn.Close() }
