package intervalstore

import "github.com/flowattr/flowattr/internal/owners"

// Status is the outcome of a Lookup.
type Status uint8

// Lookup outcomes.
const (
	// Unattributed: no owner covers the time, or one does but part of its
	// ClockSkew neighbourhood is covered by no claim yet; Reason says why.
	Unattributed Status = iota
	// Attributed: one owner covers the time and its whole ClockSkew
	// neighbourhood.
	Attributed
	// Conflict: two or more owners cover the time.
	Conflict
	// Uncertain: one owner covers the time but another owner's coverage is
	// within ClockSkew of it.
	Uncertain
	// External is never a Lookup's answer: it is the caller's verdict on a
	// key outside the ranges whose claims it keeps in the store (the
	// ownership processor's workload ranges), counted and written beside
	// the store's answers.
	External
)

var statusNames = [...]string{"unattributed", "attributed", "conflict", "uncertain", "external"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "unknown"
}

// Reason explains a Status other than Attributed. Its String is snake_case and
// meant as a telemetry attribute value.
type Reason uint8

// Reasons.
const (
	// ReasonNone: attributed.
	ReasonNone Reason = iota
	// ReasonNoClaim: the key is unknown.
	ReasonNoClaim
	// ReasonAfterLastClaim: the time is after the key's newest range.
	ReasonAfterLastClaim
	// ReasonBeforeFirstClaim: the time is before the key's first range.
	ReasonBeforeFirstClaim
	// ReasonGap: the time is between two ranges (or between pruned history
	// and the first retained range).
	ReasonGap
	// ReasonExpired: the time is older than now-Retention.
	ReasonExpired
	// ReasonOverlappingClaims: several owners claim the time (Conflict).
	ReasonOverlappingClaims
	// ReasonNearOwnerChange: another owner is within ClockSkew (Uncertain).
	ReasonNearOwnerChange
	// ReasonNearUnclaimedEdge: one owner covers the time, but part of the
	// time within ClockSkew of it is covered by no claim (Unattributed). A
	// later claim decides it: the same owner's makes it attributed, another
	// owner's uncertain.
	ReasonNearUnclaimedEdge
)

var reasonNames = [...]string{
	"", "no_claim_yet", "not_yet_covered", "before_first_claim", "gap", "expired",
	"overlapping_claims", "near_owner_change", "near_unclaimed_edge",
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// Result is the answer of a Lookup.
type Result struct {
	// Owner is non-nil only when Status is Attributed. It is shared and
	// immutable: do not modify it.
	Owner  *owners.Owner
	Status Status
	Reason Reason
}

// ApplyResult describes what an Apply changed.
type ApplyResult struct {
	// NewKey: the key had no ranges before.
	NewKey bool
	// Conflict: the claim covers time that another owner already covered and
	// this owner did not, so it created or widened a conflict.
	Conflict bool
	// Evicted is the number of keys evicted to make room for a new key.
	Evicted int
}

// Stats is a snapshot of the store's size and cumulative counters.
type Stats struct {
	Keys           int
	Ranges         int
	ConflictRanges int
	Owners         int // interned owners, including unreferenced ones until they are collected

	Conflicts    uint64 // Applies that created or widened a conflict
	Evictions    uint64 // keys evicted because of MaxKeys
	PrunedRanges uint64 // ranges dropped by Prune
}
