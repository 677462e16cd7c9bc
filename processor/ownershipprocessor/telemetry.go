package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"context"

	"go.opentelemetry.io/collector/pipeline"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/flowattr/flowattr/internal/intervalstore"
	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadata"
)

// telemetry is one pipeline's instruments, with the attribute sets it
// records them with, made once.
type telemetry struct {
	*metadata.TelemetryBuilder
	items    metric.MeasurementOption // processor and otel.signal, as processorhelper's
	origins  [len(originNames)]metric.MeasurementOption
	statuses [4]metric.MeasurementOption // by intervalstore.Status
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
		outcomes: make(map[string]metric.MeasurementOption),
	}
	for o, name := range originNames {
		t.origins[o] = metric.WithAttributeSet(attribute.NewSet(attribute.String("origin", name)))
	}
	for s := range t.statuses {
		t.statuses[s] = metric.WithAttributeSet(attribute.NewSet(attribute.String("status", intervalstore.Status(s).String())))
	}
	for _, o := range []string{outcomeAttributed, outcomeDecided, outcomeTimeout, outcomeOverflow, outcomeShutdown} {
		t.outcomes[o] = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", o)))
	}
	return t, nil
}

// batchStats accumulates one batch's telemetry, recorded once per batch.
type batchStats struct {
	applied    [len(originNames)]int64
	rejected   []rejection
	conflicts  int64
	evictions  int64
	lookups    [4]int64 // by intervalstore.Status
	heldChange int64
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

// report records st.
func (t *telemetry) report(ctx context.Context, st *batchStats) {
	for o, n := range st.applied {
		if n > 0 {
			t.ProcessorOwnershipClaimsApplied.Add(ctx, n, t.origins[o])
		}
	}
	for _, r := range st.rejected {
		t.ProcessorOwnershipClaimsRejected.Add(ctx, r.n, metric.WithAttributes(
			attribute.String("origin", originNames[r.origin]), attribute.String("reason", r.reason)))
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
