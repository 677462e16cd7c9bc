package flowmapexporter

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowattr/flowattr/internal/flowschema"
)

var (
	frontend = workload("frontend-7d9", "frontend", "shop")
	checkout = workload("checkout-5b2", "checkout", "shop")
	payments = workload("payments-1a", "payments", "pay")
)

const (
	idFrontend = "w/shop/frontend"
	idCheckout = "w/shop/checkout"
	idPayments = "w/pay/payments"
)

// Figures of a known set of flows: client and server records fold into
// client-to-server edges, bytes by direction, failures, RTT percentiles,
// ports, and the node sums with their unattributed and external shares.
func TestSnapshotFigures(t *testing.T) {
	m := newTestMap(5*time.Minute, 100, 100)
	outcomes, _ := m.add(
		rec{local: frontend, peer: checkout, peerPort: 8080, sent: 1000, received: 5000, srttUS: 1024},
		rec{local: frontend, peer: checkout, peerPort: 8080, sent: 2000, received: 7000, srttUS: 1024},
		// The server's record of a connection: the edge is still frontend
		// -> checkout, its bytes received are the bytes to the server.
		rec{local: checkout, peer: frontend, role: flowschema.RoleServer, localPort: 8443, peerPort: 51000, sent: 300, received: 100, srttUS: 4096},
		rec{local: checkout, peer: payments, peerPort: 9000, state: flowschema.FlowStateFailed, errName: "ECONNREFUSED"},
		rec{local: checkout, peer: payments, peerPort: 9000, sent: 10, received: 20, retransmits: 3, srttUS: 90},
		rec{local: frontend, status: "external", reason: "outside_workload_cidrs", peerPort: 443, sent: 50, received: 60},
		rec{local: frontend, status: "unattributed", reason: "no_claim_yet", peerPort: 443},
		rec{local: frontend, status: "conflict", reason: "overlapping_claims", peerPort: 443},
	)
	for i, o := range outcomes {
		require.Equalf(t, outcomeMapped, o, "record %d", i)
	}
	nodes, edges := m.graph()
	assert.ElementsMatch(t, []string{idFrontend, idCheckout, idPayments, "external", "unattributed", "conflict"}, keys(nodes))
	assert.ElementsMatch(t, []string{
		idFrontend + " -> " + idCheckout, idCheckout + " -> " + idPayments,
		idFrontend + " -> external", idFrontend + " -> unattributed", idFrontend + " -> conflict",
	}, keys(edges))

	fc := edges[idFrontend+" -> "+idCheckout]
	assert.Equal(t, uint64(3), fc.Flows)
	assert.Equal(t, uint64(0), fc.Failed)
	assert.Equal(t, uint64(1000+2000+100), fc.BytesToServer)
	assert.Equal(t, uint64(5000+7000+300), fc.BytesToClient)
	assert.Equal(t, RTT{P50: 1024, P90: 4096, P99: 4096, Samples: 3}, fc.RTT)
	assert.Equal(t, []PortFlows{{Port: 8080, Flows: 2}, {Port: 8443, Flows: 1}}, fc.Ports)

	cp := edges[idCheckout+" -> "+idPayments]
	assert.Equal(t, uint64(2), cp.Flows)
	assert.Equal(t, uint64(1), cp.Failed)
	assert.Equal(t, uint64(3), cp.Retransmits)
	assert.Equal(t, RTT{P50: 91, P90: 91, P99: 91, Samples: 1}, cp.RTT, "90 µs is in the bucket up to round(2^6.5) = 91")

	fe := nodes[idFrontend]
	assert.Equal(t, "workload", fe.Kind)
	assert.Equal(t, "frontend", fe.Name)
	assert.Equal(t, "shop", fe.Group)
	assert.Equal(t, map[string]string{"service.name": "frontend", "k8s.namespace.name": "shop"}, fe.Attributes)
	assert.Equal(t, uint64(6), fe.Flows)
	assert.Equal(t, uint64(3100+50), fe.BytesSent)
	assert.Equal(t, uint64(12300+60), fe.BytesReceived)
	assert.Equal(t, uint64(2), fe.UnattributedFlows, "unattributed and conflict")
	assert.Equal(t, uint64(1), fe.ExternalFlows)
	assert.InDelta(t, 2.0/6, fe.UnattributedShare, 1e-9)
	assert.InDelta(t, 1.0/6, fe.ExternalShare, 1e-9)
	assert.Empty(t, fe.Ports, "frontend accepted no connection")

	ch := nodes[idCheckout]
	assert.Equal(t, uint64(5), ch.Flows)
	assert.Equal(t, uint64(1), ch.Failed)
	assert.Equal(t, []PortFlows{{Port: 8080, Flows: 2}, {Port: 8443, Flows: 1}}, ch.Ports, "ports checkout accepted on")
	assert.Equal(t, uint64(12300+10), ch.BytesSent)
	assert.Equal(t, uint64(3100+20), ch.BytesReceived)
	assert.Zero(t, ch.UnattributedShare)
}

// A flow counts from the slot it arrived in until that slot leaves the
// window; then its edge and nodes are gone.
func TestWindowSlides(t *testing.T) {
	m := newTestMap(100*time.Second, 100, 100) // slots of 10s
	m.clock.Set(t0.Add(5 * time.Second))
	m.add(rec{local: frontend, peer: checkout, sent: 1})
	m.clock.Advance(50 * time.Second)
	m.add(rec{local: frontend, peer: checkout, sent: 10}, rec{local: checkout, peer: payments})

	_, edges := m.graph()
	assert.Equal(t, uint64(11), edges[idFrontend+" -> "+idCheckout].BytesToServer)

	// t0+100s: the slot of t0+5s has just left the window of 10 slots.
	m.clock.Set(t0.Add(100 * time.Second))
	_, edges = m.graph()
	assert.Equal(t, uint64(10), edges[idFrontend+" -> "+idCheckout].BytesToServer)
	assert.Equal(t, uint64(1), edges[idFrontend+" -> "+idCheckout].Flows)

	// t0+150s: nothing left.
	m.clock.Set(t0.Add(150 * time.Second))
	nodes, edges := m.graph()
	assert.Empty(t, nodes)
	assert.Empty(t, edges)
	n, e := m.agg.sizes()
	assert.Zero(t, n)
	assert.Zero(t, e)

	// A slot reused after a full turn starts from zero.
	m.add(rec{local: frontend, peer: checkout, sent: 7})
	_, edges = m.graph()
	assert.Equal(t, uint64(7), edges[idFrontend+" -> "+idCheckout].BytesToServer)
}

// Beyond max_nodes, workloads go to the other bucket; beyond max_edges,
// edges go to the other bucket's own edge; both are counted and no flow is
// lost. Once the window moves on, there is room again.
func TestLimitsFoldIntoOther(t *testing.T) {
	m := newTestMap(100*time.Second, 2, 2)
	_, res := m.add(
		rec{local: frontend, peer: checkout},          // 2 workloads, 1 edge
		rec{local: frontend, peer: payments},          // payments -> other: edge frontend -> other
		rec{local: checkout, status: "unattributed"},  // edge 3: beyond max_edges
		rec{local: checkout, status: "unattributed"},  // again
		rec{local: frontend, peer: checkout, sent: 5}, // known edge: fits
	)
	assert.Equal(t, []addResult{{}, {foldedNode: true}, {foldedEdge: true}, {foldedEdge: true}, {}}, res)
	nodes, edges := m.graph()
	assert.ElementsMatch(t, []string{idFrontend, idCheckout, "other"}, keys(nodes), "the unattributed bucket has no edge of its own")
	assert.ElementsMatch(t, []string{idFrontend + " -> " + idCheckout, idFrontend + " -> other", "other -> other"}, keys(edges))
	assert.Equal(t, uint64(2), edges["other -> other"].Flows)
	assert.Equal(t, uint64(5), sumFlows(edges))

	m.clock.Advance(200 * time.Second)
	_, res = m.add(rec{local: payments, peer: checkout})
	assert.Equal(t, []addResult{{}}, res)
	_, edges = m.graph()
	assert.Equal(t, []string{idPayments + " -> " + idCheckout}, keys(edges))
}

// Peers that are no workload each go to their own bucket; a local side
// with no owner is the no_owner bucket; a workload without node_attribute
// is named by its ID; the same name in two groups is two nodes.
func TestBucketsAndNames(t *testing.T) {
	m := newTestMap(time.Minute, 100, 100)
	noService := workload("batch-42", "", "jobs")
	otherShopCheckout := workload("checkout-x", "checkout", "shop2")
	m.add(
		rec{local: frontend, status: "uncertain"},
		rec{local: frontend, noStatus: true},
		rec{peer: checkout},
		rec{local: noService, peer: otherShopCheckout},
		rec{local: frontend, peer: checkout},
	)
	nodes, edges := m.graph()
	assert.ElementsMatch(t, []string{idFrontend, idCheckout, "uncertain", "unattributed", "no_owner", "w/jobs/batch-42", "w/shop2/checkout"}, keys(nodes))
	assert.Contains(t, edges, "no_owner -> "+idCheckout)
	assert.Contains(t, edges, idFrontend+" -> unattributed", "a record no ownership processor saw")
	assert.Equal(t, "batch-42", nodes["w/jobs/batch-42"].Name)
}

// Interim records, claims and owners beyond the limits add nothing and are
// told apart.
func TestSkippedRecords(t *testing.T) {
	m := newTestMap(time.Minute, 100, 100)
	huge := workload("huge", strings.Repeat("x", 2000), "shop")
	outcomes, res := m.add(
		rec{local: frontend, peer: checkout, state: flowschema.FlowStateActive},
		rec{event: flowschema.EventClaim},
		rec{local: frontend, peer: huge},
		rec{local: huge, peer: checkout},
		rec{local: frontend, peer: checkout},
	)
	assert.Equal(t, []outcome{outcomeInterim, outcomeNotFlow, outcomeMapped, outcomeMapped, outcomeMapped}, outcomes)
	assert.Equal(t, []addResult{{ownerTooLarge: true}, {ownerTooLarge: true}, {}}, res)
	nodes, edges := m.graph()
	assert.ElementsMatch(t, []string{idFrontend, idCheckout}, keys(nodes), "a rejected record leaves no node behind")
	assert.Equal(t, uint64(1), sumFlows(edges))
	// The rejected client's node was dropped, not leaked.
	assert.Len(t, m.agg.nodeIndex, 2)
}

// Over 6 server ports, the first six keep their counts and the rest are
// counted together.
func TestPortsBeyondMax(t *testing.T) {
	m := newTestMap(time.Minute, 100, 100)
	var recs []rec
	for p := range int64(8) {
		recs = append(recs, rec{local: frontend, peer: checkout, peerPort: 8000 + p})
	}
	recs = append(recs, rec{local: frontend, peer: checkout, peerPort: 8000})
	m.add(recs...)
	_, edges := m.graph()
	e := edges[idFrontend+" -> "+idCheckout]
	assert.Len(t, e.Ports, maxPorts)
	assert.Equal(t, PortFlows{Port: 8000, Flows: 2}, e.Ports[0])
	assert.Equal(t, uint64(2), e.OtherPortFlows)
}

// A record's byte and retransmit counts go up to math.MaxInt64; totals of
// a few of them saturate at math.MaxUint64 instead of wrapping to a small
// number: in a slot, over the window's slots, and in a node's sums over
// its edges, self-loops' included.
func TestTotalsSaturate(t *testing.T) {
	m := newTestMap(100*time.Second, 100, 100) // slots of 10s
	const big = math.MaxInt64
	huge := rec{local: frontend, peer: checkout, sent: big, retransmits: big}
	m.add(huge, huge, huge) // one slot
	for range 3 {
		m.clock.Advance(10 * time.Second)
		m.add(rec{local: checkout, peer: payments, sent: big, received: big, retransmits: big})
	}
	m.add(
		rec{local: frontend, status: "external", sent: big, retransmits: big},
		rec{local: frontend, status: "unattributed", sent: big},
	)
	// A self-loop adds its bytes to its node in two steps, one per
	// direction: each is checked on a node of its own, whose other edge
	// comes first.
	ledger := workload("ledger-3c", "ledger", "pay")
	m.add(rec{local: ledger, status: "external", received: big})
	m.add(
		rec{local: payments, peer: payments, sent: big}, rec{local: payments, peer: payments, sent: big},
		rec{local: ledger, peer: ledger, received: big}, rec{local: ledger, peer: ledger, received: big},
	)

	nodes, edges := m.graph()
	const saturated = uint64(math.MaxUint64)
	fc, cp := edges[idFrontend+" -> "+idCheckout], edges[idCheckout+" -> "+idPayments]
	assert.Equal(t, []uint64{saturated, 0, saturated}, []uint64{fc.BytesToServer, fc.BytesToClient, fc.Retransmits}, "in a slot")
	assert.Equal(t, []uint64{saturated, saturated, saturated}, []uint64{cp.BytesToServer, cp.BytesToClient, cp.Retransmits}, "over slots")
	fe := nodes[idFrontend]
	assert.Equal(t, []uint64{saturated, saturated}, []uint64{fe.BytesSent, fe.Retransmits}, "a node over its edges")
	assert.Equal(t, saturated, nodes[idCheckout].BytesReceived, "a node over its edges")
	assert.Equal(t, saturated, nodes[idPayments].BytesSent, "a node with a self-loop")
	assert.Equal(t, saturated, nodes["w/pay/ledger"].BytesReceived, "a node with a self-loop")
}

func TestRTTBuckets(t *testing.T) {
	assert.Equal(t, uint64(1), rttUpper[0])
	assert.Equal(t, uint64(1024), rttUpper[20])
	for _, us := range []uint64{0, 1, 2, 3, 90, 91, 92, 1023, 1024, 1025, 1 << 30} {
		b := rttBucket(us)
		assert.LessOrEqual(t, us, rttUpper[b], "%d µs in bucket %d", us, b)
		if b > 0 {
			assert.Greater(t, us, rttUpper[b-1], "%d µs in bucket %d", us, b)
		}
	}
	var h hist
	assert.Equal(t, RTT{}, rttOf(&h))
	h[rttBuckets-1] = 1
	assert.Equal(t, rttUpper[rttBuckets-2], rttOf(&h).P99, "the unbounded bucket reports the bound below it")
}

func keys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func sumFlows(edges map[string]Edge) uint64 {
	var n uint64
	for _, e := range edges {
		n += e.Flows
	}
	return n
}

// Attributes of the wrong type or out of range read as unknown or zero:
// the flow is still mapped, nothing panics.
func TestParseOddValues(t *testing.T) {
	ld := logsOf(rec{local: frontend, peer: checkout})
	lr := ld.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords().At(0)
	a := lr.Attributes()
	a.PutStr(flowschema.AttrNetworkPeerPort, "https")
	a.PutInt(flowschema.AttrFlowBytesSent, -5)
	a.PutStr(flowschema.AttrFlowBytesReceived, "many")
	a.PutStr(flowschema.AttrFlowSRTT, "fast")
	a.PutInt(flowschema.AttrFlowRetransmits, -1)
	a.PutInt(flowschema.AttrFlowState, 3)
	a.PutInt(flowschema.PrefixPeerOwner+"service.name", 7)
	p := newParser("service.name", "k8s.namespace.name")
	var f flow
	o, rejected := p.parse(lr, &f)
	require.Equal(t, outcomeMapped, o)
	assert.Equal(t, 4, rejected, "bytes sent and received, RTT, retransmits")
	assert.Equal(t, uint16(0), f.serverPort)
	assert.Zero(t, f.bytesToServer)
	assert.Zero(t, f.bytesToClient)
	assert.Zero(t, f.retransmits)
	assert.False(t, f.hasRTT)
	assert.False(t, f.failed)
	assert.Equal(t, "7", f.server.name, "a non-string owner attribute reads as its text")

	a.PutInt(flowschema.AttrNetworkPeerPort, 70000)
	a.PutInt(flowschema.AttrFlowBytesSent, 5)
	a.PutInt(flowschema.AttrFlowBytesReceived, 0)
	a.PutInt(flowschema.AttrFlowSRTT, 0)
	a.PutInt(flowschema.AttrFlowRetransmits, 0)
	o, rejected = p.parse(lr, &f)
	require.Equal(t, outcomeMapped, o)
	assert.Zero(t, rejected)
	assert.Equal(t, uint64(5), f.bytesToServer)
	assert.True(t, f.hasRTT)
	assert.Equal(t, uint16(0), f.serverPort, "not a port")
}
