package fleetsim

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowattr/flowattr/internal/localowner"
)

func sec(s float64) int64 { return int64(s * float64(time.Second)) }

// A host's claims and local owners come from internal/localowner, on the
// host's clock: claims start when a workload started there, never before,
// and end when it ended; a flow whose local workload changed while it ran
// names no local owner, and its claim covers only the new workload's part.
func TestHostRunsLocalOwnership(t *testing.T) {
	sc := DefaultScenario()
	sc.IPs, sc.Hosts = 2, 1
	f := newFleet(&sc)
	h := &f.hosts[0]
	h.skew = -sec(0.3)
	a, b := f.startSegment(0, -sec(5), sec(2)), f.startSegment(1, -sec(10), sec(100))
	require.NoError(t, h.start(context.Background(), f))
	addr0, addr1 := f.addrs[0].addr, f.addrs[1].addr

	f.now = sec(2)
	f.endSegment(0)
	f.now = sec(3)
	c := f.startSegment(0, f.now, sec(100))

	f.now = sec(5)
	changed := &flow{local: a, start: sec(1), end: f.now}
	assert.False(t, h.endFlow(changed, addr0), "the local workload changed mid-flow")
	assert.Empty(t, changed.localOwner.ID)
	f.now = sec(6)
	onC := &flow{local: c, start: sec(4), end: f.now}
	assert.True(t, h.endFlow(onC, addr0))
	assert.Equal(t, c.owner, onC.localOwner)
	initial := &flow{local: b, start: sec(1), end: f.now}
	assert.True(t, h.endFlow(initial, addr1), "a workload held at start is initial")
	assert.Equal(t, b.owner, initial.localOwner)

	f.now = sec(10)
	got := h.claimer.CloseInterval(h.wallTime(f.now))
	type claim struct {
		addr       string
		owner      string
		start, end time.Time
		basis      string
	}
	var claims []claim
	for _, c := range got {
		assert.Equal(t, h.name, c.Sender)
		claims = append(claims, claim{c.Address.String(), c.Owner.ID, c.Start, c.End, c.Basis})
	}
	assert.Equal(t, []claim{
		// Known since the host started, held until it ended on the host.
		{addr0.String(), a.owner.ID, h.wallTime(0), h.wallTime(a.end), localowner.BasisSource},
		// From its start on the host clock: the flow that began under a
		// does not stretch it back.
		{addr0.String(), c.owner.ID, h.wallTime(c.start), h.wallTime(f.now), localowner.BasisSource},
		{addr1.String(), b.owner.ID, h.wallTime(0), h.wallTime(f.now), localowner.BasisSource},
	}, claims)
}

// Over a whole run with a faultless network, every claim comes from the host
// of its workload, and a workload's claims touch one another and cover
// exactly its tenure on that host's clock (from the host's start for the
// initial ones) up to the host's last claim interval. Every flow record
// names its local workload: a host learns a workload when it starts and
// drops it after its connections have closed.
func TestRunClaimsCoverTenuresOnHostClocks(t *testing.T) {
	sc := tinyScenario()
	sc.IPs, sc.Hosts, sc.Flows = 60, 4, 2_000
	sc.MeanLifetime = 20 * time.Second
	sc.MaxHostSkew = 2 * time.Second
	sc.Claims = Delivery{}
	sc.FlowJitter = 0
	r := newRunner(sc)
	require.NoError(t, r.start(context.Background()))

	segs := map[int64]*segment{}
	// Every workload lives at least a nanosecond: none is missed.
	noteSegments := func() {
		for _, a := range r.fleet.addrs {
			if a.cur != nil {
				segs[a.cur.id] = a.cur
			}
		}
	}
	noteSegments()
	claimedTo := map[int64]time.Time{}
	claims, records := 0, 0
	end := int64(sc.Warmup + sc.Duration)
	for r.gen.Len() > 0 && r.gen.peekAt() <= end {
		at := r.gen.peekAt()
		require.NoError(t, r.generate(at))
		noteSegments()
		for m, ok := r.net.due(at); ok; m, ok = r.net.due(at) {
			switch m.kind {
			case msgFlow:
				records++
				assert.Equal(t, m.flow.local.owner, m.flow.localOwner, "flow %d", m.flow.id)
			case msgClaim:
				claims++
				c := m.claim
				seg := segs[workloadID(c.Owner.ID)]
				require.NotNil(t, seg, c.Owner.ID)
				h := &r.fleet.hosts[seg.host]
				assert.Equal(t, h.name, c.Sender)
				assert.Equal(t, r.fleet.addrs[seg.ip].addr, c.Address)
				want, ok := claimedTo[seg.id]
				if !ok {
					want = h.wallTime(max(seg.start, 0))
				}
				assert.Equal(t, want, c.Start, "%s: the claim starts where the last one ended, or at the tenure's start", c.Owner.ID)
				assert.False(t, c.End.After(h.wallTime(seg.end)), "%s: a claim ends with the tenure", c.Owner.ID)
				claimedTo[seg.id] = c.End
			}
		}
	}
	require.Positive(t, records)
	require.Positive(t, claims)
	ended := 0
	for id, seg := range segs {
		h := &r.fleet.hosts[seg.host]
		if lastClose := h.nextClose - int64(sc.ClaimInterval); seg.end <= lastClose {
			ended++
			assert.Equal(t, h.wallTime(seg.end), claimedTo[id], "wl-%d is claimed to its end", id)
		}
	}
	assert.Greater(t, ended, len(r.fleet.addrs), "workloads came and went")
}
