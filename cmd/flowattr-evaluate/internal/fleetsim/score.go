package fleetsim

import (
	"fmt"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
)

// AttrFlowID carries the simulator's flow number on every flow record, so
// that an output record can be matched with its ground truth.
const AttrFlowID = "fleetsim.flow.id"

// Outcome is the score of one attributed record.
type Outcome uint8

// Outcomes. An unattributed record of the ownership processor is first
// OutcomeUnattributed and split once its deadline has passed.
const (
	// OutcomeCorrect: attributed to the workload that owned the peer address
	// at the flow's true start.
	OutcomeCorrect Outcome = iota
	// OutcomeMisattributed: attributed to any other workload.
	OutcomeMisattributed
	// OutcomeUnattributed: no owner given, not yet split.
	OutcomeUnattributed
	// OutcomeNoClaim: unattributed, and no claim of the true owner covering
	// the record's start time had been delivered by the record's deadline
	// (arrival + max_wait): no processor with this max_wait could have known.
	OutcomeNoClaim
	// OutcomeClaimUnused: unattributed although such a claim had been
	// delivered by the deadline, for another reason than OutcomeNearEdge.
	OutcomeClaimUnused
	// OutcomeConflictOrUncertain: the processor reported conflict or
	// uncertain instead of an owner.
	OutcomeConflictOrUncertain
	// OutcomeInvalid: the record carries no status or an unknown one.
	OutcomeInvalid
	// OutcomeNearEdge: unattributed with reason near_unclaimed_edge
	// although a claim of the true owner covering the start had been
	// delivered: part of start ± clock_skew was covered by no claim, the
	// price of never trusting an owner next to time nobody claimed.
	OutcomeNearEdge
)

var outcomeNames = [...]string{"correct", "misattributed", "unattributed", "no_claim", "claim_unused", "conflict_or_uncertain", "invalid", "near_edge"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// Counts tallies outcomes of one attribution path.
type Counts struct {
	Records             int
	Correct             int
	Misattributed       int
	NoClaim             int // unattributed: no claim could have been known
	ClaimUnused         int // unattributed: a claim had been delivered in time
	NearEdge            int // unattributed: near_unclaimed_edge, a claim had been delivered in time
	Unattributed        int // unattributed, not split (the baseline)
	ConflictOrUncertain int
	Invalid             int
}

func (c *Counts) add(o Outcome) {
	c.Records++
	switch o {
	case OutcomeCorrect:
		c.Correct++
	case OutcomeMisattributed:
		c.Misattributed++
	case OutcomeUnattributed:
		c.Unattributed++
	case OutcomeNoClaim:
		c.NoClaim++
	case OutcomeClaimUnused:
		c.ClaimUnused++
	case OutcomeConflictOrUncertain:
		c.ConflictOrUncertain++
	case OutcomeNearEdge:
		c.NearEdge++
	default:
		c.Invalid++
	}
}

// AllUnattributed is every unattributed record, split or not.
func (c Counts) AllUnattributed() int { return c.NoClaim + c.ClaimUnused + c.NearEdge + c.Unattributed }

// Share returns n as a percentage of the scored records.
func (c Counts) Share(n int) float64 {
	if c.Records == 0 {
		return 0
	}
	return 100 * float64(n) / float64(c.Records)
}

// classifyAttribution scores the attribution status and owner ID written on
// a record against the true owner's ID. Unattributed comes back unsplit.
func classifyAttribution(status, ownerID, trueOwnerID string) Outcome {
	switch status {
	case "attributed":
		if ownerID == trueOwnerID {
			return OutcomeCorrect
		}
		return OutcomeMisattributed
	case "unattributed":
		return OutcomeUnattributed
	case "conflict", "uncertain":
		return OutcomeConflictOrUncertain
	default:
		return OutcomeInvalid
	}
}

// splitUnattributed decides whether an unattributed record had a claim of
// its true owner at its start time available by its deadline, and if so
// whether the edge rule (reason near_unclaimed_edge) left it unattributed.
func splitUnattributed(claimDelivered, nearEdge bool) Outcome {
	switch {
	case !claimDelivered:
		return OutcomeNoClaim
	case nearEdge:
		return OutcomeNearEdge
	}
	return OutcomeClaimUnused
}

// readAttribution returns what the processor wrote on an output flow record
// and the simulator's flow ID.
func readAttribution(lr plog.LogRecord) (id uint64, status, reason, ownerID string, err error) {
	attrs := lr.Attributes()
	v, ok := attrs.Get(AttrFlowID)
	if !ok || v.Type() != pcommon.ValueTypeInt || v.Int() < 0 {
		return 0, "", "", "", fmt.Errorf("output record without int attribute %s", AttrFlowID)
	}
	id = uint64(v.Int())
	if sv, ok := attrs.Get(flowschema.AttrPeerAttributionStatus); ok {
		status = sv.AsString()
	}
	if rv, ok := attrs.Get(flowschema.AttrPeerAttributionReason); ok {
		reason = rv.AsString()
	}
	if ov, ok := attrs.Get(flowschema.PrefixPeerOwner + flowschema.OwnerIDSuffix); ok {
		ownerID = ov.AsString()
	}
	return id, status, reason, ownerID, nil
}
