package fleetsim

import (
	"math/rand/v2"
	"time"

	"github.com/flowattr/flowattr/internal/flowschema"
)

// Kinds of delivered message.
const (
	msgClaim    uint8 = iota // a claim record, to the processor
	msgFlow                  // a flow record, to the processor and the baseline
	msgAssign                // an assign event, to the baseline
	msgUnassign              // an unassign event, to the baseline
)

// message is one record or event in transit.
type message struct {
	at    int64 // delivery time
	seq   uint64
	kind  uint8
	seg   *segment         // the assigned or unassigned workload
	claim flowschema.Claim // a claim, times on its sender's clock
	flow  *flow
}

// network delivers messages with the scenario's faults. It has its own
// random stream, so that fault settings do not change the fleet or its flows.
type network struct {
	rng        *rand.Rand
	claims     Delivery
	flowJitter time.Duration
	seq        uint64
	inFlight   timedHeap[message]
	flows      int // flow messages in flight

	sent, lost, duplicated int // claims
}

func newNetwork(sc *Scenario) *network {
	return &network{
		rng:        rand.New(rand.NewPCG(sc.Seed, 2)),
		claims:     sc.Claims,
		flowJitter: sc.FlowJitter,
		inFlight: timedHeap[message]{key: func(m *message) (int64, uint64) {
			return m.at, m.seq
		}},
	}
}

func (n *network) uniform(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return n.rng.Int64N(int64(d))
}

func (n *network) enqueue(m message) {
	n.seq++
	m.seq = n.seq
	n.inFlight.push(m)
}

// sendFlow delivers a flow record emitted at true time at: flows travel on
// the local pipeline and are never lost.
func (n *network) sendFlow(at int64, f *flow) {
	n.flows++
	n.enqueue(message{at: at + n.uniform(n.flowJitter), kind: msgFlow, flow: f})
}

// sendClaim delivers a claim or baseline event emitted at true time at,
// subject to loss, delay, reordering and duplication.
func (n *network) sendClaim(at int64, m message) {
	if m.kind == msgClaim {
		n.sent++
	}
	if n.claims.Loss > 0 && n.rng.Float64() < n.claims.Loss {
		if m.kind == msgClaim {
			n.lost++
		}
		return
	}
	copies := 1
	if n.claims.Duplicate > 0 && n.rng.Float64() < n.claims.Duplicate {
		copies = 2
		if m.kind == msgClaim {
			n.duplicated++
		}
	}
	for range copies {
		m.at = at + int64(n.claims.Delay) + n.uniform(n.claims.Jitter)
		if n.claims.Reorder > 0 && n.rng.Float64() < n.claims.Reorder {
			m.at += n.uniform(n.claims.ReorderSpan)
		}
		n.enqueue(m)
	}
}

// due pops the next message delivered at or before now.
func (n *network) due(now int64) (message, bool) {
	if n.inFlight.Len() == 0 || n.inFlight.peekAt() > now {
		return message{}, false
	}
	m := n.inFlight.pop()
	if m.kind == msgFlow {
		n.flows--
	}
	return m, true
}
