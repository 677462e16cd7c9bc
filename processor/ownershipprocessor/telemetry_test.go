package ownershipprocessor

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"

	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadata"
	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadatatest"
)

// metricValue returns the value of the int sum or gauge data point of name
// whose attributes include want; 0 when there is none.
func metricValue(t *testing.T, tel *componenttest.Telemetry, name string, want map[string]string) int64 {
	t.Helper()
	m, err := tel.GetMetric(name)
	if err != nil {
		return 0
	}
	var dps []metricdata.DataPoint[int64]
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		dps = d.DataPoints
	case metricdata.Gauge[int64]:
		dps = d.DataPoints
	default:
		t.Fatalf("%s: unexpected data %T", name, m.Data)
	}
	var total int64
	for _, dp := range dps {
		match := true
		for k, v := range want {
			got, ok := dp.Attributes.Value(attribute.Key(k))
			if !ok || got.AsString() != v {
				match = false
				break
			}
		}
		if match {
			total += dp.Value
		}
	}
	return total
}

func assertCounter(t *testing.T, tel *componenttest.Telemetry, name string, attrs map[string]string, want int64) {
	t.Helper()
	require.Equal(t, want, metricValue(t, tel, name, attrs), "%s%v", name, attrs)
}

// metricdataIgnore ignores what varies between runs and the component
// attributes added by the telemetry settings.
func metricdataIgnore() []metricdatatest.Option {
	return []metricdatatest.Option{metricdatatest.IgnoreTimestamp(), metricdatatest.IgnoreExemplars()}
}

// assertItems checks the standard item counts of the processor, those that
// processorhelper reports for processors built on it.
func assertItems(t *testing.T, tel *componenttest.Telemetry, incoming, outgoing int64) {
	t.Helper()
	attrs := attribute.NewSet(attribute.String("processor", "ownership"), attribute.String("otel.signal", "logs"))
	metadatatest.AssertEqualProcessorIncomingItems(t, tel, []metricdata.DataPoint[int64]{{Value: incoming, Attributes: attrs}}, metricdataIgnore()...)
	if outgoing == 0 {
		assertCounter(t, tel, "otelcol_processor_outgoing_items", nil, 0) // none recorded yet
		return
	}
	metadatatest.AssertEqualProcessorOutgoingItems(t, tel, []metricdata.DataPoint[int64]{{Value: outgoing, Attributes: attrs}}, metricdataIgnore()...)
}

// Incoming counts every record received; outgoing every record handed to
// the next consumer, accepted or not: a held record when it is released (by
// a claim, at max_wait, at shutdown), not when it is held, and not at all
// when its batch is refused; claim records, which stop here, never.
func TestItemCountsFollowHeldRecords(t *testing.T) {
	cfg := createDefaultConfig()
	h, next := newRefusingHarness(t, cfg)
	peer := func(i int) string { return fmt.Sprintf("10.0.1.%d", i) }
	var flows []func(plog.LogRecord)
	for i := range 6 {
		flows = append(flows, flow("10.0.0.1", peer(i), t0.Add(-10*time.Second), t0))
	}
	h.consume(flows...)
	require.Zero(t, h.sink.LogRecordCount(), "all held")
	assertItems(t, h.tel, 6, 0)

	// Three claims release three records; the claim records are removed,
	// and their batch, left empty, is not sent.
	h.consume(
		claim(peer(0), "a", t0.Add(-time.Minute), t0, ""),
		claim(peer(1), "b", t0.Add(-time.Minute), t0, ""),
		claim(peer(2), "c", t0.Add(-time.Minute), t0, ""),
	)
	require.Equal(t, 3, h.sink.LogRecordCount())
	assertItems(t, h.tel, 9, 3)

	// The other three leave at max_wait, by the clock callback.
	h.clock.Advance(cfg.MaxWait)
	require.Equal(t, 6, h.sink.LogRecordCount())
	assertItems(t, h.tel, 9, 6)

	// A refused batch: its record that went on is counted, its held one
	// leaves the hold unsent; the retry's copy goes on at shutdown.
	next.refuse(1)
	require.ErrorIs(t, h.proc.ConsumeLogs(context.Background(), heldBatch()), errQueueFull)
	assertItems(t, h.tel, 11, 7)
	require.NoError(t, h.proc.ConsumeLogs(context.Background(), heldBatch()), "the receiver's retry")
	assertItems(t, h.tel, 13, 8)
	require.NoError(t, h.proc.Shutdown(context.Background()))
	require.Equal(t, 8, h.sink.LogRecordCount())
	assertItems(t, h.tel, 13, 9)
}

// zeros returns a zero data point per value of the attribute key, or one
// without attributes when there are none.
func zeros(key string, values ...string) []metricdata.DataPoint[int64] {
	if len(values) == 0 {
		return []metricdata.DataPoint[int64]{{Value: 0}}
	}
	var dps []metricdata.DataPoint[int64]
	for _, v := range values {
		dps = append(dps, metricdata.DataPoint[int64]{Attributes: attribute.NewSet(attribute.String(key, v))})
	}
	return dps
}

// Every counter is exported from Start on, at zero under each attribute set
// known up front, so that an alert on a rejection reason or on hold
// overflow sees 0, not no data, until it happens.
func TestCountersExportedAtZeroFromStart(t *testing.T) {
	h := newHarness(t, createDefaultConfig())
	opts := metricdataIgnore()
	metadatatest.AssertEqualProcessorOwnershipClaimsApplied(t, h.tel, zeros(""), opts...)
	metadatatest.AssertEqualProcessorOwnershipClaimsRejected(t, h.tel, zeros("reason",
		"missing_address", "bad_address", "missing_owner", "missing_time", "end_before_start",
		"unauthenticated_sender", "owner_too_large", "end_in_future", "unauthorized_sender",
		"outside_workload_cidrs", "expired", "store_error"), opts...)
	metadatatest.AssertEqualProcessorOwnershipLocalClaimsApplied(t, h.tel, zeros(""), opts...)
	metadatatest.AssertEqualProcessorOwnershipLocalClaimsRejected(t, h.tel, zeros("reason",
		"missing_address", "bad_address", "missing_time", "end_before_start",
		"unauthenticated_sender", "owner_too_large", "end_in_future", "unauthorized_sender",
		"outside_workload_cidrs", "expired", "store_error"), opts...)
	metadatatest.AssertEqualProcessorOwnershipFlowsWithoutLocalOwner(t, h.tel, zeros(""), opts...)
	metadatatest.AssertEqualProcessorOwnershipConflicts(t, h.tel, zeros(""), opts...)
	metadatatest.AssertEqualProcessorOwnershipEvictions(t, h.tel, zeros(""), opts...)
	metadatatest.AssertEqualProcessorOwnershipLookups(t, h.tel, zeros("status", "attributed", "unattributed", "conflict", "uncertain", "external"), opts...)
	metadatatest.AssertEqualProcessorOwnershipRecordsReleased(t, h.tel, zeros("outcome", "attributed", "decided", "timeout", "overflow", "shutdown"), opts...)
	metadatatest.AssertEqualProcessorOwnershipReleaseFailures(t, h.tel, zeros(""), opts...)
	metadatatest.AssertEqualProcessorOwnershipRecordsHeld(t, h.tel, zeros(""), opts...)
	metadatatest.AssertEqualProcessorOwnershipRecordsAwaitingResend(t, h.tel, zeros(""), opts...)
	metadatatest.AssertEqualProcessorOwnershipKeys(t, h.tel, zeros("store", "ownership"), opts...)
	metadatatest.AssertEqualProcessorOwnershipRanges(t, h.tel, zeros("store", "ownership"), opts...)
}

// TestStoreGaugesPerStore: the store gauges report one series per store,
// under its name: two processor IDs with stores of their own have two, and
// a processor that names another's store adds none.
func TestStoreGaugesPerStore(t *testing.T) {
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	f := NewFactoryWithClock(newTestClock())
	procs := map[string]processor.Logs{}
	for _, name := range []string{"a", "b", "c"} {
		set := metadatatest.NewSettings(tel)
		set.ID = component.NewIDWithName(metadata.Type, name)
		cfg := createDefaultConfig()
		if name == "c" {
			cfg.Store = "ownership/a"
		}
		p, err := f.CreateLogs(context.Background(), set, cfg, new(consumertest.LogsSink))
		require.NoError(t, err)
		require.NoError(t, p.Start(context.Background(), componenttest.NewNopHost()))
		t.Cleanup(func() { require.NoError(t, p.Shutdown(context.Background())) })
		procs[name] = p
	}
	require.NoError(t, procs["c"].ConsumeLogs(context.Background(), logsOf(
		claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, ""),
		claim("10.0.0.3", "cart", t0.Add(-time.Minute), t0, ""))))
	opts := metricdataIgnore()
	gauge := func(a, b int64) []metricdata.DataPoint[int64] {
		return []metricdata.DataPoint[int64]{
			{Value: a, Attributes: attribute.NewSet(attribute.String("store", "ownership/a"))},
			{Value: b, Attributes: attribute.NewSet(attribute.String("store", "ownership/b"))},
		}
	}
	metadatatest.AssertEqualProcessorOwnershipKeys(t, tel, gauge(2, 0), opts...)
	metadatatest.AssertEqualProcessorOwnershipRanges(t, tel, gauge(2, 0), opts...)
}
