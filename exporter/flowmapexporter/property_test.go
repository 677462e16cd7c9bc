package flowmapexporter

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/flowattr/flowattr/internal/flowschema"
)

// Random traffic from more workloads than max_nodes, with more pairs than
// max_edges, over several windows: after every batch the map holds at most
// max_nodes workloads plus the buckets and max_edges edges plus the other
// bucket's, its tables never grow past that, and every flow still in the
// window is counted exactly once, folded or not; its indexes point at the
// nodes they name.
func TestPropertyBoundsAndConservation(t *testing.T) {
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0x5eed))
			window := 100 * time.Second
			maxNodes, maxEdges := 1+rng.IntN(20), 1+rng.IntN(40)
			m := newTestMap(window, maxNodes, maxEdges)
			pool := 2 + rng.IntN(60)
			type sent struct {
				epoch int64
				bytes uint64
			}
			var model []sent
			for step := range 60 {
				m.clock.Advance(time.Duration(rng.IntN(20_000)) * time.Millisecond)
				epoch := m.agg.epoch(m.clock.Now())
				var recs []rec
				for range rng.IntN(30) {
					r := rec{
						local: workload(fmt.Sprint("w", rng.IntN(pool)), "", fmt.Sprint("ns", rng.IntN(3))),
						sent:  int64(rng.IntN(1000)),
					}
					if rng.IntN(4) == 0 {
						r.role = flowschema.RoleServer
					}
					switch rng.IntN(6) {
					case 0:
						r.status, r.reason = "external", "outside_workload_cidrs"
					case 1:
						r.status = "unattributed"
					case 2:
						r.local = nil
						r.peer = workload(fmt.Sprint("w", rng.IntN(pool)), "", "ns0")
					default:
						r.peer = workload(fmt.Sprint("w", rng.IntN(pool)), "", fmt.Sprint("ns", rng.IntN(3)))
					}
					recs = append(recs, r)
				}
				_, res := m.add(recs...)
				for i, r := range res {
					if r.ownerTooLarge {
						t.Fatalf("step %d: record %d rejected", step, i)
					}
					model = append(model, sent{epoch: epoch, bytes: uint64(recs[i].sent)})
				}

				cur := m.agg.epoch(m.clock.Now())
				var wantFlows, wantBytes uint64
				for _, s := range model {
					if live(s.epoch, cur) {
						wantFlows++
						wantBytes += s.bytes
					}
				}
				nodes, edges := m.graph()
				var gotFlows, gotBytes uint64
				for _, e := range edges {
					gotFlows += e.Flows
					gotBytes += e.BytesToServer + e.BytesToClient
				}
				if gotFlows != wantFlows || gotBytes != wantBytes {
					t.Fatalf("step %d: %d flows and %d bytes in the window, the map shows %d and %d", step, wantFlows, wantBytes, gotFlows, gotBytes)
				}
				workloads := 0
				for _, n := range nodes {
					if n.Kind == "workload" {
						workloads++
					}
				}
				if workloads > maxNodes || len(edges) > maxEdges+1 {
					t.Fatalf("step %d: %d workloads and %d edges, limits %d and %d(+1)", step, workloads, len(edges), maxNodes, maxEdges)
				}
				if len(m.agg.nodes) > maxNodes+int(numKinds)-1 || len(m.agg.edges) > maxEdges+1 {
					t.Fatalf("step %d: tables of %d nodes and %d edges, limits %d and %d", step, len(m.agg.nodes), len(m.agg.edges), maxNodes+int(numKinds)-1, maxEdges+1)
				}
				if len(m.agg.nodeIndex) != len(m.agg.nodes)-len(m.agg.freeNodes) || len(m.agg.edgeIndex) != len(m.agg.edges)-len(m.agg.freeEdges) {
					t.Fatalf("step %d: index and free lists disagree", step)
				}
				for key, id := range m.agg.nodeIndex {
					if m.agg.nodes[id].key != key {
						t.Fatalf("step %d: index has %v at node %d, which is %v", step, key, id, m.agg.nodes[id].key)
					}
				}
				for k, id := range m.agg.buckets {
					if id >= 0 && m.agg.nodes[id].key != (nodeKey{kind: nodeKind(k)}) {
						t.Fatalf("step %d: bucket %s is node %d, which is %v", step, nodeKind(k), id, m.agg.nodes[id].key)
					}
				}
				for _, side := range m.agg.recent {
					for _, r := range side {
						if r.id >= 0 && m.agg.nodes[r.id].key != r.key {
							t.Fatalf("step %d: recent %v is node %d, which is %v", step, r.key, r.id, m.agg.nodes[r.id].key)
						}
					}
				}
			}
		})
	}
}
