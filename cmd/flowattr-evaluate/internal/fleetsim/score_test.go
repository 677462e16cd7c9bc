package fleetsim

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
)

func TestClassifyAttribution(t *testing.T) {
	for _, tc := range []struct {
		status, owner, truth string
		want                 Outcome
	}{
		{"attributed", "wl-1", "wl-1", OutcomeCorrect},
		{"attributed", "wl-2", "wl-1", OutcomeMisattributed},
		{"attributed", "", "wl-1", OutcomeMisattributed},
		{"unattributed", "", "wl-1", OutcomeUnattributed},
		{"conflict", "", "wl-1", OutcomeConflictOrUncertain},
		{"uncertain", "", "wl-1", OutcomeConflictOrUncertain},
		{"", "wl-1", "wl-1", OutcomeInvalid},
		{"bogus", "", "wl-1", OutcomeInvalid},
	} {
		assert.Equal(t, tc.want, classifyAttribution(tc.status, tc.owner, tc.truth), "%+v", tc)
	}
	assert.Equal(t, OutcomeClaimUnused, splitUnattributed(true, false))
	assert.Equal(t, OutcomeNearEdge, splitUnattributed(true, true))
	assert.Equal(t, OutcomeNoClaim, splitUnattributed(false, false))
	assert.Equal(t, OutcomeNoClaim, splitUnattributed(false, true), "no claim: the floor, whatever the reason")
}

func TestCoverageOracle(t *testing.T) {
	o := newCoverageOracle(2, 100)
	o.add(0, 1, 10, 20, 50)
	o.add(0, 1, 30, 40, 50)
	o.add(0, 2, 18, 32, 50) // another owner overlapping both
	assert.True(t, o.covered(0, 1, 10))
	assert.True(t, o.covered(0, 1, 20))
	assert.False(t, o.covered(0, 1, 25), "a gap stays a gap: no merge gap in the oracle")
	assert.True(t, o.covered(0, 2, 25))
	assert.False(t, o.covered(1, 1, 15), "other address")

	o.add(0, 1, 20, 30, 50) // fills the gap: one span for owner 1
	assert.True(t, o.covered(0, 1, 25))
	n := 0
	for _, sp := range o.spans[0] {
		if sp.owner == 1 {
			n++
			assert.Equal(t, span{owner: 1, s: 10, e: 40}, sp)
		}
	}
	assert.Equal(t, 1, n)

	o.add(0, 3, 200, 210, 145) // horizon 45: owner 1's span ends at 40
	assert.False(t, o.covered(0, 1, 30), "forgotten beyond retention")
	assert.False(t, o.covered(0, 2, 32))
	assert.True(t, o.covered(0, 3, 205))
	o.add(0, 4, 0, 10, 145)
	assert.False(t, o.covered(0, 4, 5), "a claim older than retention is refused")
}

// TestScoreRecords feeds hand-made output records through the runner's
// scoring: correct, misattributed, conflict, duplicated, unknown, and two
// unattributed records split by whether a claim had arrived by the deadline,
// and one left unattributed by the edge rule.
func TestScoreRecords(t *testing.T) {
	sc := DefaultScenario()
	sc.IPs = 4
	r := &runner{
		sc:       sc,
		clock:    newClock(),
		pending:  make(map[uint64]*flow),
		deferred: timedHeap[deferredRecord]{key: func(d *deferredRecord) (int64, uint64) { return d.at, d.seq }},
		oracle:   newCoverageOracle(sc.IPs, int64(sc.Processor.Retention)),
	}
	peer := &segment{id: 7, owner: owners.Owner{ID: "wl-7"}, ip: 2}
	for id := uint64(1); id <= 7; id++ {
		r.pending[id] = &flow{id: id, peer: peer, start: 1000, skew: 5, arrived: 2000}
	}
	r.nextFlowID = 7
	sink := new(consumertest.LogsSink)
	ld := plog.NewLogs()
	records := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	put := func(id int64, status, owner string) {
		lr := records.AppendEmpty()
		lr.SetEventName(flowschema.EventFlow)
		lr.Attributes().PutInt(AttrFlowID, id)
		lr.Attributes().PutStr(flowschema.AttrPeerAttributionStatus, status)
		if owner != "" {
			lr.Attributes().PutStr(flowschema.PrefixPeerOwner+flowschema.OwnerIDSuffix, owner)
		}
	}
	put(1, "attributed", "wl-7")
	put(2, "attributed", "wl-6")
	put(3, "conflict", "")
	put(4, "unattributed", "")
	put(5, "unattributed", "")
	put(7, "unattributed", "")
	records.At(records.Len()-1).Attributes().PutStr(flowschema.AttrPeerAttributionReason, "near_unclaimed_edge")
	put(1, "attributed", "wl-7") // again
	put(99, "attributed", "wl-7")
	claim := records.AppendEmpty() // claims passed on are not scored
	flowschema.PutClaim(claim, flowschema.Claim{Owner: owners.Owner{ID: "x"}})
	require.NoError(t, sink.ConsumeLogs(t.Context(), ld))

	r.clock.set(2000 + 3*int64(sc.Tick)) // the records come out three ticks after they arrived
	require.NoError(t, r.score(sink))
	assert.Zero(t, sink.LogRecordCount(), "the sink is drained")
	assert.Equal(t, 6, r.res.Held)
	assert.Equal(t, 3*sc.Tick, r.holdPercentile(0.5))
	assert.Equal(t, 3*sc.Tick, r.holdPercentile(0.99))
	assert.Equal(t, Counts{Records: 3, Correct: 1, Misattributed: 1, ConflictOrUncertain: 1}, r.res.Ownership)
	assert.Equal(t, 1, r.res.Duplicated)
	assert.Equal(t, 1, r.res.Unknown)
	assert.Len(t, r.pending, 1, "flow 6 still waits for its record")

	// The true owner's claim covering the recorded start (1005) arrives
	// after the first unattributed record's deadline has been checked.
	deadline := 2000 + int64(sc.Processor.MaxWait)
	r.classifyDeferred(deadline - 1)
	assert.Equal(t, 3, r.res.Ownership.Records, "not split before the deadline")
	require.Equal(t, uint64(4), r.deferred.items[0].f.id)
	r.deferred.items[0].at = deadline - 1 // flow 4's deadline falls earlier
	r.classifyDeferred(deadline - 1)
	r.oracle.add(2, 7, 900, 1100, deadline)
	r.classifyDeferred(deadline)
	assert.Equal(t, 1, r.res.Ownership.NoClaim, "flow 4: no claim by its deadline")
	assert.Equal(t, 1, r.res.Ownership.ClaimUnused, "flow 5: a claim had arrived")
	assert.Equal(t, 1, r.res.Ownership.NearEdge, "flow 7: a claim had arrived, the edge rule held it back")
	assert.Equal(t, 3, r.res.Ownership.AllUnattributed())

	bad := plog.NewLogs()
	bad.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords().AppendEmpty().SetEventName(flowschema.EventFlow)
	require.NoError(t, sink.ConsumeLogs(t.Context(), bad))
	assert.ErrorContains(t, r.score(sink), AttrFlowID)
}
