package flowmapexporter // import "github.com/flowattr/flowattr/exporter/flowmapexporter"

import (
	"cmp"
	"math"
	"math/bits"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/flowattr/flowattr/internal/clock"
	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
)

// numSlots is how many steps the window moves in: the map covers the
// current slot of window/numSlots and the numSlots-1 before it.
const numSlots = 10

// maxPorts is how many server ports one edge keeps apart in a slot; flows
// to further ports are counted together.
const maxPorts = 6

// nodeKind tells workloads from the buckets of peers that are none.
type nodeKind uint8

const (
	kindWorkload     nodeKind = iota // an owner, by node_attribute (and group_by)
	kindExternal                     // a peer outside the workload ranges
	kindUnattributed                 // a peer not attributed (no claim covers it)
	kindConflict                     // a peer claimed by two owners at once
	kindUncertain                    // a peer whose owner changed near the flow's start
	kindNoOwner                      // a local side that names no owner
	kindOther                        // workloads beyond max_nodes, edges beyond max_edges
	numKinds
)

var kindNames = [numKinds]string{"workload", "external", "unattributed", "conflict", "uncertain", "no_owner", "other"}

func (k nodeKind) String() string { return kindNames[k] }

// endpoint is one end of a flow as the map sees it.
type endpoint struct {
	kind        nodeKind
	group, name string // workloads only
	// peer tells which owner of the flow's record the endpoint is, read
	// only when it makes a new node.
	peer bool
}

// flow is what the map takes from one flow record: which nodes, in which
// direction, and its figures.
type flow struct {
	client, server endpoint
	attrs          pcommon.Map // the record's, for the owners of new nodes
	failed         bool
	bytesToServer  uint64
	bytesToClient  uint64
	retransmits    uint64
	rttUS          uint64
	hasRTT         bool
	serverPort     uint16 // 0: unknown
}

type nodeKey struct {
	kind        nodeKind
	group, name string
}

type node struct {
	key   nodeKey
	attrs []owners.Attribute // of the first owner that made the node
	edges int                // edges that reference it
}

type portFlows struct {
	port  uint16
	flows uint32
}

// counts are one edge's figures over one slot or, summed, over the window.
type counts struct {
	flows, failed                uint64
	bytesToServer, bytesToClient uint64
	retransmits                  uint64
	otherPortFlows               uint64
	rtt                          hist
	ports                        [maxPorts]portFlows
}

type slotCounts struct {
	epoch int64 // the slot these counts are of; older ones are stale
	counts
}

type recentNode struct {
	key nodeKey
	id  int32 // -1: none
}

type edgeKey struct{ client, server int32 }

type edge struct {
	key   edgeKey
	last  int64 // the newest slot with a flow
	slots [numSlots]slotCounts
}

// addResult says what add did with a flow.
type addResult struct {
	ownerTooLarge bool // rejected: an owner beyond the limits would have made a node
	foldedNode    bool // a workload beyond max_nodes went to the other bucket
	foldedEdge    bool // an edge beyond max_edges went to the other bucket
}

// aggregate is the map: nodes and client-to-server edges with per-slot
// counts over the last window. Nodes and edges whose newest flow left the
// window are pruned when the window moves, so a bounded number of each is
// live at any time; beyond max_nodes workloads and max_edges edges, flows
// go to the other bucket. Safe for concurrent use.
type aggregate struct {
	clock    clock.Clock
	slot     time.Duration
	maxNodes int // workload nodes; buckets are few and always have room
	maxEdges int // edges besides the other bucket's own
	limits   owners.Limits

	mu        sync.Mutex
	pruned    int64 // the slot of the last prune
	nodes     []node
	freeNodes []int32
	nodeIndex map[nodeKey]int32
	// buckets holds the node of each bucket kind, -1 when it has none:
	// most flows have one end in a bucket, and this skips hashing it.
	buckets [numKinds]int32
	// recent caches workload nodes for each end of a flow (client,
	// server) in slots picked by a few bytes of the name: a host's
	// records mostly name a few dozen workloads, and comparing two
	// strings is cheaper than hashing them. Cleared whenever a node is
	// dropped.
	recent    [2][recentSlots]recentNode
	workloads int
	edges     []*edge
	edgeIndex map[edgeKey]int32
	freeEdges []int32
}

func newAggregate(c clock.Clock, window time.Duration, maxNodes, maxEdges int, limits owners.Limits) *aggregate {
	a := &aggregate{
		clock:     c,
		slot:      window / numSlots,
		maxNodes:  maxNodes,
		maxEdges:  maxEdges,
		limits:    limits,
		nodeIndex: make(map[nodeKey]int32),
		edgeIndex: make(map[edgeKey]int32),
	}
	a.forgetRecent()
	for k := range a.buckets {
		a.buckets[k] = -1
	}
	return a
}

// recentSlots is the number of recent slots for each end of a flow.
const recentSlots = 64

func (a *aggregate) forgetRecent() {
	for i := range a.recent {
		for j := range a.recent[i] {
			a.recent[i][j] = recentNode{id: -1}
		}
	}
}

// recentSlot picks the recent slot of a workload from the lengths and
// last bytes of its name and group: no hashing of whole strings.
func recentSlot(group, name string) int {
	h := uint(len(name))*31 + uint(len(group))
	if n := len(name); n > 0 {
		h = h*131 + uint(name[n-1])
		if n > 1 {
			h = h*131 + uint(name[n-2])
		}
	}
	if n := len(group); n > 0 {
		h = h*131 + uint(group[n-1])
	}
	return int(h % recentSlots)
}

func (a *aggregate) epoch(t time.Time) int64 { return t.UnixNano() / int64(a.slot) }

// lock takes the lock and prunes what left the window since the last
// prune, so the bounds apply to live nodes and edges only. It returns the
// current slot.
func (a *aggregate) lock() int64 {
	a.mu.Lock()
	cur := a.epoch(a.clock.Now())
	if cur != a.pruned {
		a.prune(cur)
		a.pruned = cur
	}
	return cur
}

// live reports whether an edge whose newest flow is in slot last is in the
// window ending with slot cur.
func live(last, cur int64) bool { return last > cur-numSlots }

func (a *aggregate) prune(cur int64) {
	for i, e := range a.edges {
		if e == nil || live(e.last, cur) {
			continue
		}
		delete(a.edgeIndex, e.key)
		a.edges[i] = nil
		a.freeEdges = append(a.freeEdges, int32(i))
		a.unref(e.key.client)
		a.unref(e.key.server)
	}
}

func (a *aggregate) unref(id int32) {
	n := &a.nodes[id]
	n.edges--
	if n.edges > 0 {
		return
	}
	delete(a.nodeIndex, n.key)
	if n.key.kind == kindWorkload {
		a.workloads--
		a.forgetRecent()
	} else {
		a.buckets[n.key.kind] = -1
	}
	*n = node{}
	a.freeNodes = append(a.freeNodes, id)
}

// addBatch adds flows, all at the clock's current time, under one lock.
func (a *aggregate) addBatch(flows []flow, results []addResult) {
	cur := a.lock()
	defer a.mu.Unlock()
	for i := range flows {
		results[i] = a.add(cur, &flows[i])
	}
}

func (a *aggregate) add(cur int64, f *flow) addResult {
	var res addResult
	client, ok := a.nodeOf(&f.client, f.attrs, &a.recent[0], &res)
	if !ok {
		return addResult{ownerTooLarge: true}
	}
	server, ok := a.nodeOf(&f.server, f.attrs, &a.recent[1], &res)
	if !ok {
		// The client node may be new and now has no edge; the next prune
		// would not find it, so drop it here.
		a.dropIfUnused(client)
		return addResult{ownerTooLarge: true}
	}
	e := a.edgeOf(edgeKey{client, server}, &res)
	e.last = cur
	s := &e.slots[cur%numSlots]
	if s.epoch != cur {
		*s = slotCounts{epoch: cur}
	}
	s.flows++
	if f.failed {
		s.failed++
	}
	s.bytesToServer = addSat(s.bytesToServer, f.bytesToServer)
	s.bytesToClient = addSat(s.bytesToClient, f.bytesToClient)
	s.retransmits = addSat(s.retransmits, f.retransmits)
	if f.hasRTT {
		s.rtt[rttBucket(f.rttUS)]++
	}
	s.addPort(f.serverPort, 1)
	return res
}

// addPort counts flows to port; port 0 (unknown) and ports beyond
// maxPorts count as other ports.
func (c *counts) addPort(port uint16, flows uint64) {
	if port != 0 {
		for i := range c.ports {
			p := &c.ports[i]
			if p.port == port || p.flows == 0 {
				p.port = port
				p.flows += uint32(flows)
				return
			}
		}
	}
	c.otherPortFlows += flows
}

func (a *aggregate) dropIfUnused(id int32) {
	if a.nodes[id].edges == 0 {
		a.nodes[id].edges = 1
		a.unref(id)
	}
}

// nodeOf returns the node of an endpoint, making it if there is room; a
// workload beyond max_nodes is the other bucket. ok is false when the
// endpoint's owner is beyond the limits.
func (a *aggregate) nodeOf(ep *endpoint, attrs pcommon.Map, recents *[recentSlots]recentNode, res *addResult) (id int32, ok bool) {
	if ep.kind != kindWorkload {
		return a.bucket(ep.kind), true
	}
	recent := &recents[recentSlot(ep.group, ep.name)]
	if recent.id >= 0 && recent.key.name == ep.name && recent.key.group == ep.group {
		return recent.id, true
	}
	key := nodeKey{kind: ep.kind, group: ep.group, name: ep.name}
	if id, ok := a.nodeIndex[key]; ok {
		*recent = recentNode{key: a.nodes[id].key, id: id}
		return id, true
	}
	if a.workloads >= a.maxNodes {
		res.foldedNode = true
		return a.bucket(kindOther), true
	}
	prefix := flowschema.PrefixLocalOwner
	if ep.peer {
		prefix = flowschema.PrefixPeerOwner
	}
	ownerAttrs, ownerID := ownerAttributes(attrs, prefix)
	if a.limits.Check(owners.Owner{ID: ownerID, Attributes: ownerAttrs}) != nil || len(ep.name) > a.limits.MaxValueLength || len(ep.group) > a.limits.MaxValueLength {
		return 0, false
	}
	key.group, key.name = strings.Clone(key.group), strings.Clone(key.name)
	a.workloads++
	id = a.newNode(key, ownerAttrs)
	*recent = recentNode{key: key, id: id}
	return id, true
}

func (a *aggregate) bucket(kind nodeKind) int32 {
	if id := a.buckets[kind]; id >= 0 {
		return id
	}
	id := a.newNode(nodeKey{kind: kind}, nil)
	a.buckets[kind] = id
	return id
}

func (a *aggregate) newNode(key nodeKey, attrs []owners.Attribute) int32 {
	n := node{key: key, attrs: attrs}
	var id int32
	if k := len(a.freeNodes); k > 0 {
		id = a.freeNodes[k-1]
		a.freeNodes = a.freeNodes[:k-1]
		a.nodes[id] = n
	} else {
		id = int32(len(a.nodes))
		a.nodes = append(a.nodes, n)
	}
	a.nodeIndex[key] = id
	return id
}

// edgeOf returns the edge of key, making it if there is room; beyond
// max_edges it is the other bucket's own edge, and the nodes of key that
// no edge references are dropped again.
func (a *aggregate) edgeOf(key edgeKey, res *addResult) *edge {
	if id, ok := a.edgeIndex[key]; ok {
		return a.edges[id]
	}
	otherKey := edgeKey{-1, -1}
	if other := a.buckets[kindOther]; other >= 0 {
		otherKey = edgeKey{other, other}
	}
	if key != otherKey && len(a.edgeIndex)-a.hasEdge(otherKey) >= a.maxEdges {
		res.foldedEdge = true
		a.dropIfUnused(key.client)
		if key.server != key.client {
			a.dropIfUnused(key.server)
		}
		other := a.bucket(kindOther)
		key = edgeKey{other, other}
		if id, ok := a.edgeIndex[key]; ok {
			return a.edges[id]
		}
	}
	e := &edge{key: key}
	a.nodes[key.client].edges++
	a.nodes[key.server].edges++
	var id int32
	if k := len(a.freeEdges); k > 0 {
		id = a.freeEdges[k-1]
		a.freeEdges = a.freeEdges[:k-1]
		a.edges[id] = e
	} else {
		id = int32(len(a.edges))
		a.edges = append(a.edges, e)
	}
	a.edgeIndex[key] = id
	return e
}

func (a *aggregate) hasEdge(key edgeKey) int {
	if _, ok := a.edgeIndex[key]; ok {
		return 1
	}
	return 0
}

// ownerAttributes returns the owner attributes under prefix on a record
// (names without the prefix, sorted) and the owner's ID.
func ownerAttributes(m pcommon.Map, prefix string) (attrs []owners.Attribute, id string) {
	for k, v := range m.All() {
		name, ok := strings.CutPrefix(k, prefix)
		if !ok || name == "" {
			continue
		}
		if name == owners.IDAttribute {
			id = v.AsString()
			continue
		}
		attrs = append(attrs, owners.Attribute{Name: name, Value: v.AsString()})
	}
	slices.SortFunc(attrs, func(x, y owners.Attribute) int { return strings.Compare(x.Name, y.Name) })
	return attrs, id
}

// sizes returns the live nodes and edges.
func (a *aggregate) sizes() (nodes, edges int) {
	a.lock()
	defer a.mu.Unlock()
	return len(a.nodeIndex), len(a.edgeIndex)
}

// nodeID is a node's ID in the JSON and on the page: stable while the node
// is live, and no workload's ID is a bucket's.
func nodeID(k nodeKey) string {
	if k.kind != kindWorkload {
		return k.kind.String()
	}
	return "w/" + url.PathEscape(k.group) + "/" + url.PathEscape(k.name)
}

// snapshot returns the map over the window ending now.
func (a *aggregate) snapshot() (start, end time.Time, nodes []Node, edges []Edge) {
	cur := a.lock()
	defer a.mu.Unlock()
	end = a.clock.Now()
	start = time.Unix(0, (cur-numSlots+1)*int64(a.slot))

	type nodeSum struct {
		Node
		rtt   hist
		ports counts // only ports and otherPortFlows
	}
	sums := make(map[int32]*nodeSum)
	sumOf := func(id int32) *nodeSum {
		if s, ok := sums[id]; ok {
			return s
		}
		n := &a.nodes[id]
		s := &nodeSum{Node: Node{ID: nodeID(n.key), Kind: n.key.kind.String(), Name: n.key.name, Group: n.key.group}}
		if len(n.attrs) > 0 {
			s.Attributes = make(map[string]string, len(n.attrs))
			for _, at := range n.attrs {
				s.Attributes[at.Name] = at.Value
			}
		}
		sums[id] = s
		return s
	}
	for _, e := range a.edges {
		if e == nil || !live(e.last, cur) {
			continue
		}
		var c counts
		for i := range e.slots {
			s := &e.slots[i]
			if s.epoch > cur-numSlots && s.epoch <= cur {
				c.merge(&s.counts)
			}
		}
		client, server := sumOf(e.key.client), sumOf(e.key.server)
		edges = append(edges, Edge{
			ID:            client.ID + " -> " + server.ID,
			Source:        client.ID,
			Target:        server.ID,
			Figures:       c.figures(),
			BytesToServer: c.bytesToServer,
			BytesToClient: c.bytesToClient,
		})
		// Unattributed and external shares are of the workload's flows
		// whose other end is such a bucket.
		for _, side := range []struct {
			self, peer    *nodeSum
			sent, recv    uint64
			peerKind      nodeKind
			isServer      bool
			selfIsPeerToo bool
		}{
			{client, server, c.bytesToServer, c.bytesToClient, a.nodes[e.key.server].key.kind, false, e.key.client == e.key.server},
			{server, client, c.bytesToClient, c.bytesToServer, a.nodes[e.key.client].key.kind, true, false},
		} {
			if side.selfIsPeerToo {
				// A self-loop: the server side below counts its flows.
				side.self.BytesSent = addSat(side.self.BytesSent, side.sent)
				side.self.BytesReceived = addSat(side.self.BytesReceived, side.recv)
				continue
			}
			n := side.self
			n.Flows += c.flows
			n.Failed += c.failed
			n.BytesSent = addSat(n.BytesSent, side.sent)
			n.BytesReceived = addSat(n.BytesReceived, side.recv)
			n.Retransmits = addSat(n.Retransmits, c.retransmits)
			n.rtt.add(&c.rtt)
			if side.isServer {
				n.ports.mergePorts(&c)
			}
			switch side.peerKind {
			case kindExternal:
				n.ExternalFlows += c.flows
			case kindUnattributed, kindConflict, kindUncertain:
				n.UnattributedFlows += c.flows
			case kindWorkload, kindNoOwner, kindOther, numKinds:
			}
		}
	}
	for _, s := range sums {
		s.RTT = rttOf(&s.rtt)
		s.Ports, s.OtherPortFlows = s.ports.portList()
		if s.Flows > 0 {
			s.UnattributedShare = float64(s.UnattributedFlows) / float64(s.Flows)
			s.ExternalShare = float64(s.ExternalFlows) / float64(s.Flows)
		}
		nodes = append(nodes, s.Node)
	}
	slices.SortFunc(nodes, func(x, y Node) int { return strings.Compare(x.ID, y.ID) })
	slices.SortFunc(edges, func(x, y Edge) int {
		return cmp.Or(strings.Compare(x.Source, y.Source), strings.Compare(x.Target, y.Target))
	})
	return start, end, nodes, edges
}

func (c *counts) merge(o *counts) {
	c.flows += o.flows
	c.failed += o.failed
	c.bytesToServer = addSat(c.bytesToServer, o.bytesToServer)
	c.bytesToClient = addSat(c.bytesToClient, o.bytesToClient)
	c.retransmits = addSat(c.retransmits, o.retransmits)
	c.rtt.add(&o.rtt)
	c.mergePorts(o)
}

// addSat returns a+b, saturating at math.MaxUint64: a record's counts go
// up to math.MaxInt64, so a few of them would wrap a total to a small one.
func addSat(a, b uint64) uint64 {
	sum, carry := bits.Add64(a, b, 0)
	if carry != 0 {
		return math.MaxUint64
	}
	return sum
}

// mergePorts adds o's port counts. A sum, like a slot, keeps apart the
// first maxPorts ports it meets and counts the rest together.
func (c *counts) mergePorts(o *counts) {
	c.otherPortFlows += o.otherPortFlows
	for _, p := range o.ports {
		if p.flows > 0 {
			c.addPort(p.port, uint64(p.flows))
		}
	}
}

func (c *counts) portList() (ports []PortFlows, other uint64) {
	ports = []PortFlows{} // a list in the JSON even when empty
	for _, p := range c.ports {
		if p.flows > 0 {
			ports = append(ports, PortFlows{Port: p.port, Flows: uint64(p.flows)})
		}
	}
	slices.SortFunc(ports, func(x, y PortFlows) int { return cmp.Or(cmp.Compare(y.Flows, x.Flows), cmp.Compare(x.Port, y.Port)) })
	return ports, c.otherPortFlows
}

func (c *counts) figures() Figures {
	f := Figures{Flows: c.flows, Failed: c.failed, Retransmits: c.retransmits, RTT: rttOf(&c.rtt)}
	f.Ports, f.OtherPortFlows = c.portList()
	return f
}

func rttOf(h *hist) RTT {
	p50, p90, p99, n := h.percentiles()
	return RTT{P50: p50, P90: p90, P99: p99, Samples: n}
}
