package flowmapexporter

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/flowattr/flowattr/exporter/flowmapexporter/internal/metadatatest"
	"github.com/flowattr/flowattr/internal/clock"
	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/testutil/fuzzbytes"
)

var fuzzStrs = []string{"", "a", "b", "attributed", "external", "conflict", "uncertain", "closed", "failed", "active", "client", "server", string(make([]byte, 2000))}

// fuzzKeys are the attributes the exporter reads; the fuzzer gives them
// every value type.
var fuzzKeys = []string{
	flowschema.AttrNetworkLocalPort, flowschema.AttrNetworkPeerPort, flowschema.AttrPeerAttributionStatus,
	flowschema.AttrFlowState, flowschema.AttrFlowRole, flowschema.AttrFlowBytesSent, flowschema.AttrFlowBytesReceived,
	flowschema.AttrFlowRetransmits, flowschema.AttrFlowSRTT, flowschema.AttrFlowError,
	flowschema.PrefixLocalOwner + "id", flowschema.PrefixLocalOwner + "service.name", flowschema.PrefixLocalOwner + "k8s.namespace.name",
	flowschema.PrefixPeerOwner + "id", flowschema.PrefixPeerOwner + "service.name", flowschema.PrefixPeerOwner + "k8s.namespace.name",
	flowschema.PrefixPeerOwner + "x",
}

func putValue(s *fuzzbytes.Source, m pcommon.Map, k string) {
	switch s.Byte() % 8 {
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
		m.PutBool(k, true)
	case 6:
		m.PutEmptyMap(k).PutStr("x", "y")
	case 7:
		m.PutEmptySlice(k).AppendEmpty().SetStr("z")
	}
}

// FuzzConsumeLogs feeds records with any values to a small map over a few
// steps and checks it after each batch: every record is counted under an
// outcome, the map keeps its bounds, every node is on an edge, and a node's
// byte totals are at least those of each of its edges, which a wrapping sum
// would break.
func FuzzConsumeLogs(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
	f.Add([]byte{0xff, 0x01, 0x07, 0x02, 0x01, 0x03})
	// An input the fuzzer found: byte counts whose node sums wrap.
	f.Add([]byte("070000010200000000000200000000100100200000000101000200000000C011020000000X0010001010000000000020000000x"))
	f.Fuzz(func(t *testing.T, data []byte) {
		src := fuzzbytes.New(data)
		tel := componenttest.NewTelemetry()
		defer func() { require.NoError(t, tel.Shutdown(context.Background())) }()
		c := clock.NewManual(t0)
		cfg := createDefaultConfig()
		cfg.MaxNodes, cfg.MaxEdges = 3, 3
		e, err := newFlowmap(metadatatest.NewSettings(tel), cfg, c)
		require.NoError(t, err)
		defer e.tel.Shutdown()
		var records int64
		for range int(src.Byte()%4) + 1 {
			ld := plog.NewLogs()
			lrs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
			for range int(src.Byte() % 16) {
				lr := lrs.AppendEmpty()
				if src.Byte()%5 != 0 {
					lr.SetEventName(flowschema.EventFlow)
				}
				for _, k := range fuzzKeys {
					putValue(src, lr.Attributes(), k)
				}
			}
			require.NoError(t, e.consume(context.Background(), ld))
			records += int64(lrs.Len())
			assert.Equal(t, records, recordsCounted(tel), "records counted by outcome")
			c.Advance(time.Duration(src.Byte()) * time.Second)
			checkMap(t, e.agg, cfg)
		}
	})
}

// recordsCounted sums exporter_flowmap_records over its outcomes.
func recordsCounted(tel *componenttest.Telemetry) int64 {
	m, err := tel.GetMetric("otelcol_exporter_flowmap_records")
	if err != nil {
		return 0 // nothing counted yet
	}
	var n int64
	for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
		n += dp.Value
	}
	return n
}

func checkMap(t *testing.T, agg *aggregate, cfg *Config) {
	_, _, nodes, edges := agg.snapshot()
	n, en := agg.sizes()
	assert.Len(t, nodes, n, "every live node is on a live edge")
	assert.Len(t, edges, en)
	byID := map[string]Node{}
	workloads := 0
	for _, n := range nodes {
		byID[n.ID] = n
		if n.Kind == "workload" {
			workloads++
		}
	}
	assert.LessOrEqual(t, workloads, cfg.MaxNodes)
	assert.LessOrEqual(t, len(edges), cfg.MaxEdges+1, "the other bucket's edge beyond max_edges")
	for _, e := range edges {
		src, dst := byID[e.Source], byID[e.Target]
		assert.GreaterOrEqual(t, src.BytesSent, e.BytesToServer, "%s", e.ID)
		assert.GreaterOrEqual(t, src.BytesReceived, e.BytesToClient, "%s", e.ID)
		assert.GreaterOrEqual(t, dst.BytesReceived, e.BytesToServer, "%s", e.ID)
		assert.GreaterOrEqual(t, dst.BytesSent, e.BytesToClient, "%s", e.ID)
	}
}
