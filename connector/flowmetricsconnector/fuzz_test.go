package flowmetricsconnector

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/testutil/fuzzbytes"
)

var fuzzStrs = []string{"", "a", "b", "attributed", "closed", "failed", "active", "client", "server"}

// fuzzKeys are the attributes the connector reads; the fuzzer gives them
// every value type.
var fuzzKeys = []string{
	flowschema.AttrServerPort, flowschema.AttrPeerAttributionStatus,
	flowschema.AttrFlowState, flowschema.AttrFlowRole, flowschema.AttrFlowBytesSent, flowschema.AttrFlowBytesReceived,
	flowschema.AttrFlowRetransmits, flowschema.AttrFlowSRTT, flowschema.AttrFlowError, flowschema.AttrFlowStartTime,
	flowschema.PrefixLocalOwner + "id", flowschema.PrefixPeerOwner + "id",
}

func putValue(s *fuzzbytes.Source, m pcommon.Map, k string) {
	switch s.Byte() % 7 {
	case 0:
	case 1:
		m.PutStr(k, fuzzStrs[int(s.Byte())%len(fuzzStrs)])
	case 2:
		m.PutInt(k, s.Int64())
	case 3:
		m.PutInt(k, int64(s.Byte()))
	case 4:
		m.PutDouble(k, float64(s.Int64()))
	case 5:
		m.PutEmptyMap(k).PutStr("x", "y")
	case 6:
		m.PutInt(k, t0.UnixNano()-int64(s.Byte())*int64(time.Second))
	}
}

// FuzzConsumeLogs feeds flow records with any values over a few intervals
// and checks what comes out: every final record is counted in the metrics
// or as dropped, sums are never negative, histograms add up, and no metric
// has two data points with the same attributes.
func FuzzConsumeLogs(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
	// Inputs the fuzzer found: a negative byte count; two server.port
	// values that are not ports; byte counts whose sum wraps.
	f.Add([]byte("0110000000000000001A0000000\xff0"))
	f.Add([]byte("0002000000000A0000000\xed0000A00000000000010000001100000000010000000"))
	f.Add([]byte("0007" + strings.Repeat("0", 183)))
	f.Fuzz(func(t *testing.T, data []byte) {
		src := fuzzbytes.New(data)
		cfg := createDefaultConfig()
		cfg.MaxSeries = 3
		h := newHarness(t, cfg)
		var final int64
		for range int(src.Byte()%3) + 1 {
			ld := plog.NewLogs()
			rl := ld.ResourceLogs().AppendEmpty()
			putValue(src, rl.Resource().Attributes(), "host.name")
			lrs := rl.ScopeLogs().AppendEmpty().LogRecords()
			for range int(src.Byte() % 16) {
				lr := lrs.AppendEmpty()
				if src.Byte()%5 != 0 {
					lr.SetEventName(flowschema.EventFlow)
				}
				lr.SetTimestamp(pcommon.Timestamp(uint64(src.Int64())))
				for _, k := range fuzzKeys {
					putValue(src, lr.Attributes(), k)
				}
				state, ok := lr.Attributes().Get(flowschema.AttrFlowState)
				if lr.EventName() == flowschema.EventFlow && (!ok || state.AsString() != flowschema.FlowStateActive) {
					final++
				}
			}
			require.NoError(t, h.conn.ConsumeLogs(context.Background(), ld))
			h.clock.Advance(time.Duration(src.Byte()) * time.Second)
		}
		require.NoError(t, h.conn.Shutdown(context.Background()))
		assert.Equal(t, final, counter(t, h.tel, "otelcol_connector_flowmetrics_records")+counter(t, h.tel, "otelcol_connector_flowmetrics_records_dropped"))
		for _, md := range h.sink.AllMetrics() {
			checkDataPoints(t, md)
		}
	})
}

// counter returns a counter's value, 0 when nothing was ever added to it.
func counter(t *testing.T, tel *componenttest.Telemetry, name string) int64 {
	m, err := tel.GetMetric(name)
	if err != nil {
		return 0
	}
	dps := m.Data.(metricdata.Sum[int64]).DataPoints
	require.Len(t, dps, 1, name)
	return dps[0].Value
}

func checkDataPoints(t *testing.T, md pmetric.Metrics) {
	for _, rm := range md.ResourceMetrics().All() {
		for _, m := range rm.ScopeMetrics().At(0).Metrics().All() {
			seen := map[string]bool{}
			once := func(attrs pcommon.Map) {
				k := fmt.Sprint(attrs.AsRaw())
				assert.False(t, seen[k], "%s: two data points with %s", m.Name(), k)
				seen[k] = true
			}
			switch m.Type() {
			case pmetric.MetricTypeSum:
				for _, dp := range m.Sum().DataPoints().All() {
					once(dp.Attributes())
					assert.GreaterOrEqual(t, dp.IntValue(), int64(0), "%s %v: a monotonic sum below 0", m.Name(), dp.Attributes().AsRaw())
				}
			case pmetric.MetricTypeHistogram:
				for _, dp := range m.Histogram().DataPoints().All() {
					once(dp.Attributes())
					var n uint64
					for _, c := range dp.BucketCounts().All() {
						n += c
					}
					assert.Equal(t, dp.Count(), n, "%s %v: bucket counts", m.Name(), dp.Attributes().AsRaw())
				}
			default:
				t.Errorf("metric %s of type %s", m.Name(), m.Type())
			}
		}
	}
}
