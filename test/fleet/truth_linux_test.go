package fleet

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/test/internal/collectortest"
)

// tenancy is one owner holding an address on a host, from..to (to zero while
// it still holds it).
type tenancy struct {
	owner    string
	host     *host
	from, to time.Time
}

// connection is one TCP connection the test made, with the window in which
// both its sockets lived.
type connection struct {
	client, server         netip.AddrPort
	clientHost, serverHost *host
	start, end             time.Time
	phase                  string
	seen                   map[*host]int // records received, by capturing host
}

// groundTruth is what the test did: who held which address when, and every
// connection it made. It is written by the traffic and scenario goroutines
// and read by the checker.
type groundTruth struct {
	mu      sync.Mutex
	tenancy map[netip.Addr][]tenancy
	conns   map[[2]netip.AddrPort][]*connection
	all     []*connection
	// down are the windows in which a host's collector was not capturing.
	down map[*host][][2]time.Time
	// edges are the moments at which what could be claimed about an
	// address began or ended: collector starts (a store starts empty,
	// claims start when a receiver starts) and every assign and release.
	edges []time.Time
	// phase names the part of the scenario new connections belong to.
	phase string
	t0    time.Time // when the scenario started, for reports
}

func newGroundTruth() *groundTruth {
	return &groundTruth{
		tenancy: map[netip.Addr][]tenancy{},
		conns:   map[[2]netip.AddrPort][]*connection{},
		down:    map[*host][][2]time.Time{},
		phase:   "steady",
		t0:      time.Now(),
	}
}

func (g *groundTruth) setPhase(p string) {
	g.mu.Lock()
	g.phase = p
	g.mu.Unlock()
}

func (g *groundTruth) assign(a netip.Addr, owner string, h *host, at time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.tenancy[a] = append(g.tenancy[a], tenancy{owner: owner, host: h, from: at})
	g.edges = append(g.edges, at)
}

// markEdge records a collector start.
func (g *groundTruth) markEdge(at time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.edges = append(g.edges, at)
}

// nearEdge reports whether t is within edgeSlack of an edge: there the
// processor answers near_unclaimed_edge by design, because part of
// [t-clock_skew, t+clock_skew] was never claimed by anyone.
func (g *groundTruth) nearEdge(t time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, e := range g.edges {
		if d := t.Sub(e); d > -edgeSlack && d < edgeSlack {
			return true
		}
	}
	return false
}

func (g *groundTruth) release(a netip.Addr, at time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ts := g.tenancy[a]
	ts[len(ts)-1].to = at
	g.edges = append(g.edges, at)
}

// ownerAt returns the owner of a at t, "" when nobody held it.
func (g *groundTruth) ownerAt(a netip.Addr, t time.Time) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, tn := range g.tenancy[a] {
		if !t.Before(tn.from) && (tn.to.IsZero() || t.Before(tn.to)) {
			return tn.owner
		}
	}
	return ""
}

func (g *groundTruth) addConn(c *connection) {
	g.mu.Lock()
	defer g.mu.Unlock()
	c.phase = g.phase
	c.seen = map[*host]int{}
	k := [2]netip.AddrPort{c.client, c.server}
	g.conns[k] = append(g.conns[k], c)
	g.all = append(g.all, c)
}

func (g *groundTruth) markDown(h *host, from, to time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down[h] = append(g.down[h], [2]time.Time{from, to})
}

// captured reports whether h's collector ran for the whole life of c.
func (g *groundTruth) captured(h *host, c *connection) bool {
	for _, w := range g.down[h] {
		if c.start.Before(w[1]) && c.end.After(w[0]) {
			return false
		}
	}
	return true
}

// verdict is the checker's tally over every flow record received.
type verdict struct {
	records, attributed, misattributed int
	wrongLocalOwner, wrongHost         int
	duplicates, unknown                int
	// unattributed counts records not attributed, by
	// "phase/status/reason".
	unattributed map[string]int
	// lost lists connection ends a running collector should have reported.
	lost []lostEnd
	// outcomes has one entry per flow record of a test connection, for
	// attribution rates over time.
	outcomes   []outcome
	optional   int // ends whose collector was down for part of the connection, and reported anyway
	uncaptured int // ends whose collector was down for part of the connection, not reported
	examples   []string
	connsTotal int
}

// lostEnd is a connection end whose collector ran, and that it never
// reported.
type lostEnd struct {
	conn *connection
	host *host // the end's host
	seen int   // records received of the want expected
	want int
}

func (l lostEnd) String() string {
	return fmt.Sprintf("%s -> %s from %s (%s, phase %s): %d of %d records", l.conn.client, l.conn.server, l.host.name, l.conn.start.Format(time.StampMilli), l.conn.phase, l.seen, l.want)
}

// outcome is how one flow record's peer was attributed.
type outcome struct {
	capturer, peerHost *host
	start              time.Time
	attributed         bool          // to the right owner
	delay              time.Duration // from the connection's end to the record's arrival at the sink
}

func (v *verdict) example(format string, args ...any) {
	if len(v.examples) < 20 {
		v.examples = append(v.examples, fmt.Sprintf(format, args...))
	}
}

// check scores every flow record against the ground truth.
func (g *groundTruth) check(records []collectortest.Record, inodes map[int64]*host) verdict {
	g.mu.Lock()
	conns := g.conns
	all := g.all
	g.mu.Unlock()
	v := verdict{unattributed: map[string]int{}, connsTotal: len(all)}
	for _, r := range records {
		if r.EventName != flowschema.EventFlow {
			continue
		}
		v.records++
		local, err1 := netip.ParseAddr(r.Str(flowschema.AttrNetworkLocalAddress))
		peer, err2 := netip.ParseAddr(r.Str(flowschema.AttrNetworkPeerAddress))
		if err1 != nil || err2 != nil {
			v.unknown++
			v.example("record without addresses: %v", r.Attrs)
			continue
		}
		localAP := netip.AddrPortFrom(local, uint16(r.Int(flowschema.AttrNetworkLocalPort)))
		peerAP := netip.AddrPortFrom(peer, uint16(r.Int(flowschema.AttrNetworkPeerPort)))
		start := time.Unix(0, r.Int(flowschema.AttrFlowStartTime))
		c, isClient := g.find(conns, localAP, peerAP, start)
		if c == nil {
			v.unknown++
			v.example("record of no test connection: %s -> %s at %s", localAP, peerAP, start.Format(time.StampMilli))
			continue
		}
		capturer := inodes[r.Int(flowschema.AttrNetnsInode)]
		wantHost, peerHost := c.serverHost, c.clientHost
		if isClient {
			wantHost, peerHost = c.clientHost, c.serverHost
		}
		if capturer != wantHost {
			v.wrongHost++
			v.example("%s -> %s reported from the wrong namespace", localAP, peerAP)
		}
		g.mu.Lock()
		c.seen[capturer]++
		if c.clientHost == c.serverHost {
			if c.seen[capturer] > 2 {
				v.duplicates++
			}
		} else if c.seen[capturer] > 1 {
			v.duplicates++
		}
		g.mu.Unlock()

		if want := g.ownerAt(local, c.start); r.Str(flowschema.PrefixLocalOwner+flowschema.OwnerIDSuffix) != want {
			v.wrongLocalOwner++
			v.example("%s -> %s: local owner %q, truth %q", localAP, peerAP, r.Str(flowschema.PrefixLocalOwner+flowschema.OwnerIDSuffix), want)
		}
		status := r.Str(flowschema.AttrPeerAttributionStatus)
		got := r.Str(flowschema.PrefixPeerOwner + flowschema.OwnerIDSuffix)
		want := g.ownerAt(peer, c.start)
		v.outcomes = append(v.outcomes, outcome{
			capturer: capturer, peerHost: peerHost, start: c.start,
			attributed: status == "attributed" && got == want, delay: r.Received.Sub(c.end),
		})
		switch {
		case status == "attributed" && got == want:
			v.attributed++
		case status == "attributed":
			v.misattributed++
			v.example("MISATTRIBUTED %s -> %s (%s, phase %s): got %q, truth %q", localAP, peerAP, c.start.Format(time.StampMilli), c.phase, got, want)
		default:
			if got != "" {
				v.misattributed++
				v.example("%s record carries owner %q", status, got)
			}
			reason := r.Str(flowschema.AttrPeerAttributionReason)
			if reason == "near_unclaimed_edge" && g.nearEdge(c.start) {
				v.unattributed[edgePhase+"/"+status+"/"+reason]++
				continue
			}
			v.unattributed[c.phase+"/"+status+"/"+reason]++
			v.example("%s %s -> %s (peer owner %q) from %s, started %.2fs, phase %s", status, localAP, peerAP, want, capturer.name, c.start.Sub(g.t0).Seconds(), c.phase)
		}
	}
	for _, c := range all {
		ends := []*host{c.clientHost, c.serverHost}
		for i, h := range ends {
			want := 1
			if c.clientHost == c.serverHost {
				if i == 1 {
					continue
				}
				want = 2
			}
			switch {
			case !g.captured(h, c):
				if c.seen[h] > 0 {
					v.optional++
				} else {
					v.uncaptured++
				}
			case c.seen[h] < want:
				v.lost = append(v.lost, lostEnd{conn: c, host: h, seen: c.seen[h], want: want})
			}
		}
	}
	return v
}

// find returns the connection a record with these endpoints and start time
// belongs to, and whether the record is its client end.
func (g *groundTruth) find(conns map[[2]netip.AddrPort][]*connection, local, peer netip.AddrPort, start time.Time) (*connection, bool) {
	for _, o := range []struct {
		key    [2]netip.AddrPort
		client bool
	}{{[2]netip.AddrPort{local, peer}, true}, {[2]netip.AddrPort{peer, local}, false}} {
		for _, c := range conns[o.key] {
			if !start.Before(c.start.Add(-time.Second)) && !start.After(c.end.Add(time.Second)) {
				return c, o.client
			}
		}
	}
	return nil, false
}

func (v verdict) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "connections %d, flow records %d: attributed %d, misattributed %d, not attributed %d; lost %d, duplicates %d, unknown %d, wrong local owner %d, wrong namespace %d, ends whose collector was down for part of the connection: %d reported, %d not",
		v.connsTotal, v.records, v.attributed, v.misattributed, sum(v.unattributed), len(v.lost), v.duplicates, v.unknown, v.wrongLocalOwner, v.wrongHost, v.optional, v.uncaptured)
	keys := make([]string, 0, len(v.unattributed))
	for k := range v.unattributed {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  not attributed %s: %d", k, v.unattributed[k])
	}
	for _, e := range v.examples {
		fmt.Fprintf(&b, "\n  %s", e)
	}
	for _, l := range v.lost {
		fmt.Fprintf(&b, "\n  lost %s", l)
	}
	return b.String()
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
