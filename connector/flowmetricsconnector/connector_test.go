package flowmetricsconnector

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/connector"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"

	"github.com/flowattr/flowattr/connector/flowmetricsconnector/internal/metadata"
	"github.com/flowattr/flowattr/connector/flowmetricsconnector/internal/metadatatest"
	"github.com/flowattr/flowattr/internal/clock"
	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
)

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

// harness is a started connector on a manual clock, with the sink its
// metrics go to.
type harness struct {
	t     *testing.T
	clock *clock.Manual
	tel   *componenttest.Telemetry
	sink  *consumertest.MetricsSink
	conn  connector.Logs
}

func newHarness(t *testing.T, cfg *Config) *harness {
	t.Helper()
	h := &harness{t: t, clock: clock.NewManual(t0), tel: componenttest.NewTelemetry(), sink: new(consumertest.MetricsSink)}
	t.Cleanup(func() { require.NoError(t, h.tel.Shutdown(context.Background())) })
	conn, err := NewFactoryWithClock(h.clock).CreateLogsToMetrics(context.Background(), metadatatest.NewSettings(h.tel), cfg, h.sink)
	require.NoError(t, err)
	require.NoError(t, conn.Start(context.Background(), componenttest.NewNopHost()))
	h.conn = conn
	return h
}

// flow is a flow record as the ebpfflow receiver and the ownership
// processor write one; zero fields are left out.
type flow struct {
	role, state, status   string
	localOwner, peerOwner string
	port                  int64
	duration              time.Duration
	sent, received        int64
	retransmits, srtt     int64
	err                   string
}

func (f flow) put(lr plog.LogRecord, end time.Time) {
	lr.SetEventName(flowschema.EventFlow)
	lr.SetTimestamp(pcommon.NewTimestampFromTime(end))
	a := lr.Attributes()
	a.PutStr(flowschema.AttrNetworkLocalAddress, "10.1.0.1")
	a.PutStr(flowschema.AttrNetworkPeerAddress, "10.2.0.1")
	a.PutInt(flowschema.AttrFlowStartTime, end.Add(-f.duration).UnixNano())
	a.PutStr(flowschema.AttrFlowState, f.state)
	a.PutInt(flowschema.AttrFlowBytesSent, f.sent)
	a.PutInt(flowschema.AttrFlowBytesReceived, f.received)
	a.PutInt(flowschema.AttrFlowRetransmits, f.retransmits)
	if f.role != "" {
		a.PutStr(flowschema.AttrFlowRole, f.role)
		a.PutInt(flowschema.AttrServerPort, f.port)
	}
	if f.srtt > 0 {
		a.PutInt(flowschema.AttrFlowSRTT, f.srtt)
	}
	if f.err != "" {
		a.PutStr(flowschema.AttrFlowError, f.err)
	}
	if f.status != "" {
		a.PutStr(flowschema.AttrPeerAttributionStatus, f.status)
	}
	if f.localOwner != "" {
		flowschema.PutOwner(a, flowschema.PrefixLocalOwner, owners.Owner{ID: f.localOwner, Attributes: []owners.Attribute{{Name: "service.name", Value: f.localOwner + "-svc"}}})
	}
	if f.peerOwner != "" {
		flowschema.PutOwner(a, flowschema.PrefixPeerOwner, owners.Owner{ID: f.peerOwner, Attributes: []owners.Attribute{{Name: "service.name", Value: f.peerOwner + "-svc"}}})
	}
}

// consume sends the flows, ending at end, from host (none when empty).
func (h *harness) consume(host string, end time.Time, flows ...flow) {
	h.t.Helper()
	ld := plog.NewLogs()
	rl := ld.ResourceLogs().AppendEmpty()
	if host != "" {
		rl.Resource().Attributes().PutStr("host.name", host)
	}
	lrs := rl.ScopeLogs().AppendEmpty().LogRecords()
	for _, f := range flows {
		f.put(lrs.AppendEmpty(), end)
	}
	require.NoError(h.t, h.conn.ConsumeLogs(context.Background(), ld))
}

// points flattens emitted metrics into "metric{attributes}" -> value: a
// sum's value, or a histogram's "count sum [bucket counts]".
func points(t *testing.T, md pmetric.Metrics, start, end time.Time) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, rm := range md.ResourceMetrics().All() {
		var host string
		if v, ok := rm.Resource().Attributes().Get("host.name"); ok {
			host = v.AsString()
		}
		for _, sm := range rm.ScopeMetrics().All() {
			assert.Equal(t, metadata.ScopeName, sm.Scope().Name())
			for _, m := range sm.Metrics().All() {
				add := func(attrs pcommon.Map, st, ts pcommon.Timestamp, v string) {
					assert.Equal(t, []time.Time{start, end}, []time.Time{st.AsTime(), ts.AsTime()}, "%s: the interval's bounds", m.Name())
					var kv []string
					for k, v := range attrs.All() {
						kv = append(kv, k+"="+v.AsString())
					}
					slices.Sort(kv)
					key := fmt.Sprintf("%s{%s}@%s", m.Name(), strings.Join(kv, ","), host)
					assert.NotContains(t, out, key, "one data point per series")
					out[key] = v
				}
				switch m.Type() {
				case pmetric.MetricTypeSum:
					assert.Equal(t, pmetric.AggregationTemporalityDelta, m.Sum().AggregationTemporality())
					assert.True(t, m.Sum().IsMonotonic())
					for _, dp := range m.Sum().DataPoints().All() {
						add(dp.Attributes(), dp.StartTimestamp(), dp.Timestamp(), fmt.Sprint(dp.IntValue()))
					}
				case pmetric.MetricTypeHistogram:
					assert.Equal(t, pmetric.AggregationTemporalityDelta, m.Histogram().AggregationTemporality())
					for _, dp := range m.Histogram().DataPoints().All() {
						add(dp.Attributes(), dp.StartTimestamp(), dp.Timestamp(), fmt.Sprintf("%d %.6g %v", dp.Count(), dp.Sum(), dp.BucketCounts().AsRaw()))
					}
				default:
					t.Errorf("metric %s of type %s", m.Name(), m.Type())
				}
			}
		}
	}
	return out
}

// TestIntervalMetrics sends one interval's flow records and checks every
// data point emitted at its end: the sums and histograms of each series,
// by local and peer workload, server port, role and attribution status,
// the duration histogram's also by error; interim records, claims and
// other records count nowhere; absent attributes are absent.
func TestIntervalMetrics(t *testing.T) {
	h := newHarness(t, createDefaultConfig())
	client := flow{role: "client", state: "closed", status: "attributed", localOwner: "frontend", peerOwner: "checkout", port: 443}
	with := func(f flow, edit func(*flow)) flow {
		edit(&f)
		return f
	}
	end := t0.Add(5 * time.Second)
	h.consume("node-a", end,
		with(client, func(f *flow) {
			f.duration, f.sent, f.received, f.retransmits, f.srtt = 2*time.Second, 1000, 5000, 2, 1500
		}),
		with(client, func(f *flow) { f.duration, f.sent, f.received, f.srtt = 300*time.Millisecond, 500, 2500, 3000 }),
		with(client, func(f *flow) { f.state, f.duration, f.err = "failed", time.Millisecond, "ECONNREFUSED" }),
		with(client, func(f *flow) {
			f.state, f.duration, f.sent, f.retransmits, f.srtt = "active", 4*time.Second, 99999, 9, 900
		}),
		flow{state: "closed", status: "external", localOwner: "frontend", duration: time.Second, sent: 100, received: 200, srtt: 40000},
	)
	h.consume("node-b", end, with(client, func(f *flow) { f.role, f.port, f.duration, f.sent = "server", 8080, 20*time.Millisecond, 300 }))
	// A claim and a record of another kind.
	ld := plog.NewLogs()
	lrs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	flowschema.PutClaim(lrs.AppendEmpty(), flowschema.Claim{Address: mustAddr(t, "10.2.0.1"), Owner: owners.Owner{ID: "checkout"}, Start: t0, End: end})
	lrs.AppendEmpty().Body().SetStr("not a flow")
	require.NoError(t, h.conn.ConsumeLogs(context.Background(), ld))

	assert.Zero(t, h.sink.DataPointCount(), "nothing before the interval ends")
	h.clock.Advance(10 * time.Second)
	require.Len(t, h.sink.AllMetrics(), 1)
	c := "flowattr.flow.role=client,flowattr.local.owner.id=frontend,flowattr.peer.attribution.status=attributed,flowattr.peer.owner.id=checkout,server.port=443"
	s := "flowattr.flow.role=server,flowattr.local.owner.id=frontend,flowattr.peer.attribution.status=attributed,flowattr.peer.owner.id=checkout,server.port=8080"
	e := "flowattr.local.owner.id=frontend,flowattr.peer.attribution.status=external"
	// The attributes in order, with network.io.direction among them.
	io := func(attrs, dir string) string {
		if i := strings.Index(attrs, ",server.port="); i >= 0 {
			return attrs[:i] + ",network.io.direction=" + dir + attrs[i:]
		}
		return attrs + ",network.io.direction=" + dir
	}
	assert.Equal(t, map[string]string{
		"flowattr.network.io{" + io(c, "transmit") + "}@node-a":                           "1500",
		"flowattr.network.io{" + io(c, "receive") + "}@node-a":                            "7500",
		"flowattr.connection.retransmits{" + c + "}@node-a":                               "2",
		"flowattr.connection.duration{" + c + "}@node-a":                                  "2 2.3 [0 0 0 0 0 1 0 1 0 0 0 0 0 0 0]",
		"flowattr.connection.duration{flowattr.flow.error=ECONNREFUSED," + c + "}@node-a": "1 0.001 [1 0 0 0 0 0 0 0 0 0 0 0 0 0 0]",
		"flowattr.connection.rtt{" + c + "}@node-a":                                       "2 0.0045 [0 0 0 0 1 1 0 0 0 0 0 0 0 0]",
		"flowattr.network.io{" + io(e, "transmit") + "}@node-a":                           "100",
		"flowattr.network.io{" + io(e, "receive") + "}@node-a":                            "200",
		"flowattr.connection.retransmits{" + e + "}@node-a":                               "0",
		"flowattr.connection.duration{" + e + "}@node-a":                                  "1 1 [0 0 0 0 0 0 1 0 0 0 0 0 0 0 0]",
		"flowattr.connection.rtt{" + e + "}@node-a":                                       "1 0.04 [0 0 0 0 0 0 0 0 1 0 0 0 0 0]",
		"flowattr.network.io{" + io(s, "transmit") + "}@node-b":                           "300",
		"flowattr.network.io{" + io(s, "receive") + "}@node-b":                            "0",
		"flowattr.connection.retransmits{" + s + "}@node-b":                               "0",
		"flowattr.connection.duration{" + s + "}@node-b":                                  "1 0.02 [0 0 0 1 0 0 0 0 0 0 0 0 0 0 0]",
	}, points(t, h.sink.AllMetrics()[0], t0, t0.Add(10*time.Second)))
	metadatatest.AssertEqualConnectorFlowmetricsRecords(t, h.tel, []metricdata.DataPoint[int64]{{Value: 5}}, metricdatatest.IgnoreTimestamp())
}

// Each interval emits only its own records, over its own bounds; an
// interval without records emits nothing; shutdown emits the last one.
func TestIntervals(t *testing.T) {
	h := newHarness(t, createDefaultConfig())
	f := flow{state: "closed", status: "attributed", localOwner: "a", peerOwner: "b", duration: time.Second, sent: 10}
	h.consume("", t0, f)
	h.clock.Advance(10 * time.Second)
	h.clock.Advance(10 * time.Second) // empty
	h.consume("", t0.Add(25*time.Second), f, f)
	h.clock.Advance(10 * time.Second)
	h.consume("", t0.Add(35*time.Second), f)
	h.clock.Advance(time.Second)
	require.NoError(t, h.conn.Shutdown(context.Background()))

	all := h.sink.AllMetrics()
	require.Len(t, all, 3)
	key := "flowattr.network.io{flowattr.local.owner.id=a,flowattr.peer.attribution.status=attributed,flowattr.peer.owner.id=b,network.io.direction=transmit}@"
	for i, want := range []struct {
		from, to time.Duration
		sent     string
	}{{0, 10 * time.Second, "10"}, {20 * time.Second, 30 * time.Second, "20"}, {30 * time.Second, 31 * time.Second, "10"}} {
		got := points(t, all[i], t0.Add(want.from), t0.Add(want.to))
		assert.Equal(t, want.sent, got[key], "interval %d", i)
	}
}

// Beyond max_series in an interval, a record of a new series is dropped
// and counted; records of the series already there still count, and the
// next interval starts afresh.
func TestMaxSeries(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.MaxSeries = 2
	h := newHarness(t, cfg)
	of := func(local string) flow {
		return flow{state: "closed", status: "attributed", localOwner: local, peerOwner: "p", duration: time.Second, sent: 1}
	}
	h.consume("", t0, of("a"), of("b"), of("c"), of("a"), of("d"))
	h.clock.Advance(10 * time.Second)
	h.consume("", t0.Add(15*time.Second), of("c"))
	h.clock.Advance(10 * time.Second)

	all := h.sink.AllMetrics()
	require.Len(t, all, 2)
	got := points(t, all[0], t0, t0.Add(10*time.Second))
	key := func(local string) string {
		return "flowattr.network.io{flowattr.local.owner.id=" + local + ",flowattr.peer.attribution.status=attributed,flowattr.peer.owner.id=p,network.io.direction=transmit}@"
	}
	assert.Equal(t, "2", got[key("a")])
	assert.Equal(t, "1", got[key("b")])
	assert.NotContains(t, got, key("c"))
	assert.NotContains(t, got, key("d"))
	assert.Equal(t, "1", points(t, all[1], t0.Add(10*time.Second), t0.Add(20*time.Second))[key("c")])
	metadatatest.AssertEqualConnectorFlowmetricsRecordsDropped(t, h.tel, []metricdata.DataPoint[int64]{{Value: 2}}, metricdatatest.IgnoreTimestamp())
	metadatatest.AssertEqualConnectorFlowmetricsRecords(t, h.tel, []metricdata.DataPoint[int64]{{Value: 4}}, metricdatatest.IgnoreTimestamp())
}

// owner_attribute keys the series on another owner attribute.
func TestOwnerAttribute(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.OwnerAttribute = "service.name"
	h := newHarness(t, cfg)
	h.consume("", t0, flow{state: "closed", status: "attributed", localOwner: "a", peerOwner: "b", duration: time.Second, sent: 7})
	h.clock.Advance(10 * time.Second)
	got := points(t, h.sink.AllMetrics()[0], t0, t0.Add(10*time.Second))
	assert.Equal(t, "7", got["flowattr.network.io{flowattr.local.owner.service.name=a-svc,flowattr.peer.attribution.status=attributed,flowattr.peer.owner.service.name=b-svc,network.io.direction=transmit}@"])
}

// An attribute of the wrong type counts as absent, with no error.
func TestWrongTypes(t *testing.T) {
	h := newHarness(t, createDefaultConfig())
	ld := plog.NewLogs()
	lr := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords().AppendEmpty()
	flow{state: "closed", localOwner: "a", role: "client", port: 443, duration: time.Second, srtt: 100}.put(lr, t0)
	a := lr.Attributes()
	a.PutStr(flowschema.AttrServerPort, "443")
	a.PutStr(flowschema.AttrFlowBytesSent, "many")
	a.PutInt(flowschema.AttrFlowRole, 1)
	a.PutStr(flowschema.AttrFlowStartTime, "yesterday")
	require.NoError(t, h.conn.ConsumeLogs(context.Background(), ld))
	h.clock.Advance(10 * time.Second)
	assert.Equal(t, map[string]string{
		"flowattr.network.io{flowattr.local.owner.id=a,network.io.direction=receive}@": "0",
		"flowattr.connection.retransmits{flowattr.local.owner.id=a}@":                  "0",
		"flowattr.connection.rtt{flowattr.local.owner.id=a}@":                          "1 0.0001 [1 0 0 0 0 0 0 0 0 0 0 0 0 0]",
	}, points(t, h.sink.AllMetrics()[0], t0, t0.Add(10*time.Second)))
	metadatatest.AssertEqualConnectorFlowmetricsValuesRejected(t, h.tel, []metricdata.DataPoint[int64]{{Value: 1}}, metricdatatest.IgnoreTimestamp())
}

// A negative byte or retransmit count would make a monotonic sum go down:
// it is left out of its metric and counted, and the record still counts
// in the others.
func TestNegativeCountsRejected(t *testing.T) {
	h := newHarness(t, createDefaultConfig())
	f := flow{state: "closed", status: "attributed", localOwner: "a", peerOwner: "b", duration: time.Second}
	bad, good := f, f
	bad.sent, bad.received, bad.retransmits = -1_000_000, 50, -5
	good.sent, good.received, good.retransmits = 10, 20, 1
	// A series with only negative byte counts sent has no transmit point.
	neg := f
	neg.localOwner, neg.sent = "neg", -1
	h.consume("", t0, bad, good, neg)
	h.clock.Advance(10 * time.Second)
	series := func(local string) string {
		return "{flowattr.local.owner.id=" + local + ",flowattr.peer.attribution.status=attributed,flowattr.peer.owner.id=b"
	}
	got := points(t, h.sink.AllMetrics()[0], t0, t0.Add(10*time.Second))
	assert.Equal(t, "10", got["flowattr.network.io"+series("a")+",network.io.direction=transmit}@"])
	assert.Equal(t, "70", got["flowattr.network.io"+series("a")+",network.io.direction=receive}@"])
	assert.Equal(t, "1", got["flowattr.connection.retransmits"+series("a")+"}@"])
	assert.Equal(t, "2 2 [0 0 0 0 0 0 2 0 0 0 0 0 0 0 0]", got["flowattr.connection.duration"+series("a")+"}@"])
	assert.NotContains(t, got, "flowattr.network.io"+series("neg")+",network.io.direction=transmit}@")
	assert.Equal(t, "0", got["flowattr.network.io"+series("neg")+",network.io.direction=receive}@"])
	metadatatest.AssertEqualConnectorFlowmetricsValuesRejected(t, h.tel, []metricdata.DataPoint[int64]{{Value: 3}}, metricdatatest.IgnoreTimestamp())
	metadatatest.AssertEqualConnectorFlowmetricsRecords(t, h.tel, []metricdata.DataPoint[int64]{{Value: 3}}, metricdatatest.IgnoreTimestamp())
}

// Sums saturate at math.MaxInt64 rather than wrap to a negative value,
// both within a series and where series differing only in error add up.
func TestCountsSaturate(t *testing.T) {
	h := newHarness(t, createDefaultConfig())
	huge := flow{state: "closed", status: "attributed", localOwner: "a", peerOwner: "b", duration: time.Second, received: math.MaxInt64, retransmits: math.MaxInt64}
	failed := huge
	failed.localOwner, failed.state, failed.err = "merged", "failed", "ECONNRESET"
	closed := huge
	closed.localOwner = "merged"
	h.consume("", t0, huge, huge, failed, closed)
	h.clock.Advance(10 * time.Second)
	got := points(t, h.sink.AllMetrics()[0], t0, t0.Add(10*time.Second))
	maxInt := fmt.Sprint(int64(math.MaxInt64))
	for _, local := range []string{"a", "merged"} {
		series := "{flowattr.local.owner.id=" + local + ",flowattr.peer.attribution.status=attributed,flowattr.peer.owner.id=b"
		assert.Equal(t, maxInt, got["flowattr.network.io"+series+",network.io.direction=receive}@"], local)
		assert.Equal(t, maxInt, got["flowattr.connection.retransmits"+series+"}@"], local)
	}
}

// Only 1..65535 is a port: any other server.port is no port, and its
// records add to the one series without server.port instead of making
// series of their own written with the same attributes.
func TestServerPortRange(t *testing.T) {
	h := newHarness(t, createDefaultConfig())
	var flows []flow
	for _, port := range []int64{-1, -2, -3, 0, 65536, math.MaxInt64, math.MinInt64, 1, 65535} {
		flows = append(flows, flow{role: "client", state: "closed", localOwner: "a", port: port, duration: time.Second, sent: 1})
	}
	h.consume("", t0, flows...)
	h.clock.Advance(10 * time.Second)
	got := points(t, h.sink.AllMetrics()[0], t0, t0.Add(10*time.Second))
	sent := func(port string) string {
		return got["flowattr.network.io{flowattr.flow.role=client,flowattr.local.owner.id=a,network.io.direction=transmit"+port+"}@"]
	}
	assert.Equal(t, "7", sent(""))
	assert.Equal(t, "1", sent(",server.port=1"))
	assert.Equal(t, "1", sent(",server.port=65535"))
	assert.Len(t, got, 3*4, "three series of four points each")
}

// When the next consumer refuses an interval's metrics, the connector
// counts the lost data points, and the next interval starts afresh.
func TestDataPointsRefused(t *testing.T) {
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	c := clock.NewManual(t0)
	conn, err := NewFactoryWithClock(c).CreateLogsToMetrics(context.Background(), metadatatest.NewSettings(tel), createDefaultConfig(), consumertest.NewErr(errors.New("refused")))
	require.NoError(t, err)
	require.NoError(t, conn.Start(context.Background(), componenttest.NewNopHost()))
	send := func(flows ...flow) {
		ld := plog.NewLogs()
		lrs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
		for _, f := range flows {
			f.put(lrs.AppendEmpty(), c.Now())
		}
		require.NoError(t, conn.ConsumeLogs(context.Background(), ld))
	}
	// Bytes transmitted and received, retransmits, duration and RTT: five
	// data points a series.
	f := flow{state: "closed", status: "attributed", localOwner: "a", peerOwner: "b", duration: time.Second, sent: 1, srtt: 100}
	g := f
	g.localOwner = "c"
	send(f, g)
	c.Advance(10 * time.Second)
	metadatatest.AssertEqualConnectorFlowmetricsDataPointsRefused(t, tel, []metricdata.DataPoint[int64]{{Value: 10}}, metricdatatest.IgnoreTimestamp())
	send(f)
	require.NoError(t, conn.Shutdown(context.Background()))
	metadatatest.AssertEqualConnectorFlowmetricsDataPointsRefused(t, tel, []metricdata.DataPoint[int64]{{Value: 15}}, metricdatatest.IgnoreTimestamp())
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	require.NoError(t, err)
	return a
}
