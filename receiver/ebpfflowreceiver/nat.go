package ebpfflowreceiver // import "github.com/flowattr/flowattr/receiver/ebpfflowreceiver"

import (
	"container/list"
	"errors"
	"fmt"
	"net/netip"

	"github.com/gaissmai/bart"
	"go.uber.org/zap"

	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/tracer"
)

// NATConfig resolves the translated peer of client flows to service
// addresses that the kernel translates with DNAT (Kubernetes ClusterIPs
// under kube-proxy, or any iptables/nftables DNAT rule), from the kernel's
// connection tracking.
type NATConfig struct {
	// ServiceCIDRs are the prefixes (or single addresses) of those service
	// addresses; empty disables the lookups.
	ServiceCIDRs []string `mapstructure:"service_cidrs"`
}

func (n *NATConfig) validate() []error {
	var errs []error
	if len(n.ServiceCIDRs) > tracer.MaxNATPrefixes {
		errs = append(errs, fmt.Errorf("nat.service_cidrs: %d prefixes, at most %d; list wider prefixes", len(n.ServiceCIDRs), tracer.MaxNATPrefixes))
	}
	for _, s := range n.ServiceCIDRs {
		if _, err := owners.ParsePrefix(s); err != nil {
			errs = append(errs, fmt.Errorf("nat.service_cidrs: %w", err))
		}
	}
	return errs
}

// prefixes returns the parsed service_cidrs, nil when there are none.
func (n *NATConfig) prefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range n.ServiceCIDRs {
		p, err := owners.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("nat.service_cidrs: %w", err)
		}
		out = append(out, p)
	}
	return out, nil
}

// natTable is the kernel's connection tracking as the receiver asks it.
type natTable interface {
	// Translation returns the address and port that the connection whose
	// original direction is local -> peer was sent to: peer itself when it
	// was not translated. errNoConntrackEntry when no entry matches.
	Translation(local, peer netip.AddrPort) (netip.AddrPort, error)
	Close() error
}

// errNoConntrackEntry is what natTable.Translation returns when connection
// tracking holds no entry for the connection.
var errNoConntrackEntry = errors.New("no connection tracking entry")

// Results of a lookup, the "result" attribute of ebpfflow_nat_lookups.
const (
	natTranslated   = "translated"   // the entry names another peer: written on the record
	natUntranslated = "untranslated" // the entry names the same peer: no DNAT applied
	natNotFound     = "not_found"    // no entry: conntrack does not track it, or it expired
	natError        = "error"        // the query failed
	natUnavailable  = "unavailable"  // connection tracking could not be opened at start
)

// When a lookup was made, the "at" attribute of ebpfflow_nat_lookups.
const (
	// natAtConnect: when the connection was established (a
	// tracer.KindConnected event), when its entry certainly exists.
	natAtConnect = "connect"
	// natAtRecord: when its record was built (at close, or an interim
	// report), for connections whose connect-time answer is missing.
	natAtRecord = "record"
)

// natResolver finds the translated peer of client flows to service_cidrs.
// It is used by the emitter goroutine only.
//
// The lookup is made when the kernel reports the connection established:
// its connection tracking entry exists then, whereas at close it may be
// gone already (10 s after a reset, 2 min after a clean close, or sooner
// when the table is full), and the record may wait in the queue. The answer
// waits in pending, keyed by socket cookie, until the connection's close
// takes it. A record without one (a connection older than the receiver, a
// lost connect event, an evicted answer, a failed connect) is looked up
// when it is built.
type natResolver struct {
	services bart.Lite
	table    natTable // nil when connection tracking could not be opened
	logger   *zap.Logger
	count    func(at, result string)
	evicted  func()
	logged   bool // a query error has been logged

	// pending holds the answers of open connections, at most max, oldest
	// first in order: an answer whose close was lost (ring or queue full)
	// is evicted in time rather than kept for good.
	max     int
	pending map[uint64]*list.Element
	order   list.List
	// closed holds the cookies of the last max service connections whose
	// final record went out: an interim report queued before its close can
	// be taken after it (the ring's events come first), and must neither
	// ask connection tracking about a 4-tuple that may now be another
	// connection's nor keep an answer for a socket that is gone.
	closed recentSet
}

// pendingNAT is the connect-time answer for a connection: to is valid when
// it was translated.
type pendingNAT struct {
	cookie uint64
	to     netip.AddrPort
}

func newNATResolver(prefixes []netip.Prefix, table natTable, maxPending int, logger *zap.Logger, count func(at, result string), evicted func()) *natResolver {
	n := &natResolver{table: table, logger: logger, count: count, evicted: evicted, max: maxPending, pending: make(map[uint64]*list.Element)}
	for _, p := range prefixes {
		n.services.Insert(p)
	}
	return n
}

// applies reports whether ev is a client flow to a service address.
func (n *natResolver) applies(ev *tracer.Event) bool {
	return ev.Role != tracer.RoleServer && n.services.Contains(ev.PeerAddr)
}

// connected looks up a connection the kernel reports established and keeps
// the answer for its record.
func (n *natResolver) connected(ev *tracer.Event) {
	if !n.applies(ev) {
		return
	}
	to, definite := n.lookup(natAtConnect, ev)
	if definite {
		n.keep(ev.Cookie, to)
	}
}

// translated returns the translated peer for ev's record, invalid when
// there is none: the connect-time answer if there is one, else a lookup
// now. A closed connection's answer is let go; an open one's is kept for
// its next record.
func (n *natResolver) translated(ev *tracer.Event) netip.AddrPort {
	if !n.applies(ev) {
		return netip.AddrPort{}
	}
	final := ev.Kind != tracer.KindActive
	if final {
		n.closed.add(ev.Cookie, n.max)
	} else if n.closed.has(ev.Cookie) {
		// A stale interim report: its connection's final record, which
		// went out before it, carries the answer.
		return netip.AddrPort{}
	}
	if e, ok := n.pending[ev.Cookie]; ok && ev.Cookie != 0 {
		to := e.Value.(*pendingNAT).to
		if final {
			n.order.Remove(e)
			delete(n.pending, ev.Cookie)
		}
		return to
	}
	to, definite := n.lookup(natAtRecord, ev)
	if definite && !final {
		n.keep(ev.Cookie, to)
	}
	return to
}

// lookup asks connection tracking about ev's connection and counts the
// answer. definite is false when a later query may answer otherwise.
func (n *natResolver) lookup(at string, ev *tracer.Event) (to netip.AddrPort, definite bool) {
	if n.table == nil {
		n.count(at, natUnavailable)
		return netip.AddrPort{}, false
	}
	peer := netip.AddrPortFrom(ev.PeerAddr, ev.PeerPort)
	got, err := n.table.Translation(netip.AddrPortFrom(ev.LocalAddr, ev.LocalPort), peer)
	switch {
	case errors.Is(err, errNoConntrackEntry):
		n.count(at, natNotFound)
		return netip.AddrPort{}, true
	case err != nil:
		n.count(at, natError)
		if !n.logged {
			n.logged = true
			n.logger.Warn("Looking up a flow's translated peer in connection tracking failed; flows to nat.service_cidrs go out untranslated while it fails (counted in ebpfflow_nat_lookups, result error)",
				zap.Stringer("peer", peer), zap.Error(err))
		}
		return netip.AddrPort{}, false
	case got == peer || !got.IsValid():
		n.count(at, natUntranslated)
		return netip.AddrPort{}, true
	}
	n.count(at, natTranslated)
	return got, true
}

// keep stores the answer for cookie, evicting the oldest beyond max.
func (n *natResolver) keep(cookie uint64, to netip.AddrPort) {
	if cookie == 0 {
		return
	}
	if e, ok := n.pending[cookie]; ok {
		e.Value.(*pendingNAT).to = to
		return
	}
	for n.order.Len() >= n.max {
		oldest := n.order.Front()
		n.order.Remove(oldest)
		delete(n.pending, oldest.Value.(*pendingNAT).cookie)
		n.evicted()
	}
	n.pending[cookie] = n.order.PushBack(&pendingNAT{cookie: cookie, to: to})
}

// recentSet holds the last cookies added, up to a bound, in a ring.
type recentSet struct {
	set  map[uint64]struct{}
	ring []uint64
	next int // the oldest in ring once it is full
}

// add adds cookie (not 0), dropping the oldest beyond limit.
func (s *recentSet) add(cookie uint64, limit int) {
	if cookie == 0 {
		return
	}
	if s.set == nil {
		s.set = make(map[uint64]struct{})
	}
	if _, ok := s.set[cookie]; ok {
		return
	}
	if len(s.ring) < limit {
		s.ring = append(s.ring, cookie)
	} else {
		delete(s.set, s.ring[s.next])
		s.ring[s.next] = cookie
		s.next = (s.next + 1) % limit
	}
	s.set[cookie] = struct{}{}
}

func (s *recentSet) has(cookie uint64) bool {
	_, ok := s.set[cookie]
	return ok && cookie != 0
}

func (n *natResolver) close() error {
	if n.table == nil {
		return nil
	}
	return n.table.Close()
}
