package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"context"

	"go.opentelemetry.io/collector/pipeline"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/intervalstore"
	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadata"
)

// Why a claim record, or a flow record's local side, can be rejected: the
// reason attribute values that claims_rejected and local_claims_rejected
// report at zero from the start, so that an alert on one of them never
// finds no data.
var (
	claimRejectReasons = []string{
		string(flowschema.RejectMissingAddress), string(flowschema.RejectBadAddress),
		string(flowschema.RejectMissingOwner), string(flowschema.RejectMissingTime),
		string(flowschema.RejectEndBeforeStart), reasonUnauthenticated, reasonOwnerTooLarge,
		reasonEndInFuture, reasonUnauthorized, reasonOutsideWorkload, reasonExpired, reasonStoreError,
	}
	// A flow record without a local owner makes no claim, rather than a
	// rejected one.
	localClaimRejectReasons = []string{
		string(flowschema.RejectMissingAddress), string(flowschema.RejectBadAddress),
		string(flowschema.RejectMissingTime), string(flowschema.RejectEndBeforeStart),
		reasonOwnerTooLarge, reasonEndInFuture, reasonOutsideWorkload,
		reasonUnauthorized, reasonUnauthenticated, reasonExpired, reasonStoreError,
	}
	holdOutcomes = []string{outcomeAttributed, outcomeDecided, outcomeTimeout, outcomeOverflow, outcomeShutdown}
)

// telemetry is one pipeline's instruments, with the attribute sets it
// records them with, made once.
type telemetry struct {
	*metadata.TelemetryBuilder
	items    metric.MeasurementOption // processor and otel.signal, as processorhelper's
	reasons  map[string]metric.MeasurementOption
	statuses [intervalstore.External + 1]metric.MeasurementOption // by intervalstore.Status
	outcomes map[string]metric.MeasurementOption
}

func newTelemetry(set processor.Settings) (*telemetry, error) {
	b, err := metadata.NewTelemetryBuilder(set.TelemetrySettings)
	if err != nil {
		return nil, err
	}
	t := &telemetry{
		TelemetryBuilder: b,
		items: metric.WithAttributeSet(attribute.NewSet(
			attribute.String("processor", set.ID.String()),
			attribute.String("otel.signal", pipeline.SignalLogs.String()))),
		reasons:  make(map[string]metric.MeasurementOption),
		outcomes: make(map[string]metric.MeasurementOption),
	}
	for _, reasons := range [][]string{claimRejectReasons, localClaimRejectReasons} {
		for _, r := range reasons {
			t.reasons[r] = metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", r)))
		}
	}
	for s := range t.statuses {
		t.statuses[s] = metric.WithAttributeSet(attribute.NewSet(attribute.String("status", intervalstore.Status(s).String())))
	}
	for _, o := range holdOutcomes {
		t.outcomes[o] = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", o)))
	}
	return t, nil
}

// reason returns the attribute option of a rejection reason.
func (t *telemetry) reason(r string) metric.MeasurementOption {
	if o, ok := t.reasons[r]; ok {
		return o
	}
	return metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", r)))
}

// zero adds 0 to every counter, under every attribute set known up front,
// so that each series is exported from the start, and an alert on a
// counter that stays at zero (a rejection reason, hold overflow) sees 0
// rather than no data.
func (t *telemetry) zero(ctx context.Context) {
	for _, c := range []metric.Int64Counter{
		t.ProcessorOwnershipClaimsApplied, t.ProcessorOwnershipLocalClaimsApplied,
		t.ProcessorOwnershipFlowsWithoutLocalOwner, t.ProcessorOwnershipConflicts,
		t.ProcessorOwnershipEvictions, t.ProcessorOwnershipReleaseFailures,
	} {
		c.Add(ctx, 0)
	}
	for _, r := range claimRejectReasons {
		t.ProcessorOwnershipClaimsRejected.Add(ctx, 0, t.reasons[r])
	}
	for _, r := range localClaimRejectReasons {
		t.ProcessorOwnershipLocalClaimsRejected.Add(ctx, 0, t.reasons[r])
	}
	for _, s := range t.statuses {
		t.ProcessorOwnershipLookups.Add(ctx, 0, s)
	}
	for _, o := range holdOutcomes {
		t.ProcessorOwnershipRecordsReleased.Add(ctx, 0, t.outcomes[o])
	}
	t.ProcessorOwnershipRecordsHeld.Add(ctx, 0)
	t.ProcessorOwnershipRecordsAwaitingResend.Add(ctx, 0)
}

// batchStats accumulates one batch's telemetry, recorded once per batch.
type batchStats struct {
	applied      [numOrigins]int64
	rejected     []rejection
	noLocalOwner int64 // flow records whose local side names no owner
	conflicts    int64
	evictions    int64
	lookups      [intervalstore.External + 1]int64 // by intervalstore.Status
	heldChange   int64
}

type rejection struct {
	origin int
	reason string
	n      int64
}

func (st *batchStats) reject(origin int, reason string, n int64) {
	for i := range st.rejected {
		if st.rejected[i].origin == origin && st.rejected[i].reason == reason {
			st.rejected[i].n += n
			return
		}
	}
	st.rejected = append(st.rejected, rejection{origin: origin, reason: reason, n: n})
}

func (st *batchStats) lookup(s intervalstore.Status) {
	if int(s) < len(st.lookups) {
		st.lookups[s]++
	}
}

// report records st: claim records' claims in claims_applied and
// claims_rejected, flow records' local claims in local_claims_applied and
// local_claims_rejected.
func (t *telemetry) report(ctx context.Context, st *batchStats) {
	if n := st.applied[originClaim]; n > 0 {
		t.ProcessorOwnershipClaimsApplied.Add(ctx, n)
	}
	if n := st.applied[originFlow]; n > 0 {
		t.ProcessorOwnershipLocalClaimsApplied.Add(ctx, n)
	}
	for _, r := range st.rejected {
		rejected := t.ProcessorOwnershipClaimsRejected
		if r.origin == originFlow {
			rejected = t.ProcessorOwnershipLocalClaimsRejected
		}
		rejected.Add(ctx, r.n, t.reason(r.reason))
	}
	if st.noLocalOwner > 0 {
		t.ProcessorOwnershipFlowsWithoutLocalOwner.Add(ctx, st.noLocalOwner)
	}
	if st.conflicts > 0 {
		t.ProcessorOwnershipConflicts.Add(ctx, st.conflicts)
	}
	if st.evictions > 0 {
		t.ProcessorOwnershipEvictions.Add(ctx, st.evictions)
	}
	for s, n := range st.lookups {
		if n > 0 {
			t.ProcessorOwnershipLookups.Add(ctx, n, t.statuses[s])
		}
	}
	if st.heldChange != 0 {
		t.ProcessorOwnershipRecordsHeld.Add(ctx, st.heldChange)
	}
}
