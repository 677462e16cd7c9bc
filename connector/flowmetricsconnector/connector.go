package flowmetricsconnector // import "github.com/flowattr/flowattr/connector/flowmetricsconnector"

import (
	"cmp"
	"context"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/connector"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.uber.org/zap"

	"github.com/flowattr/flowattr/connector/flowmetricsconnector/internal/metadata"
	"github.com/flowattr/flowattr/internal/clock"
	"github.com/flowattr/flowattr/internal/flowschema"
)

// Metric and attribute names: docs/schema.md#flow-metrics.
const (
	metricIO          = "flowattr.network.io"
	metricDuration    = "flowattr.connection.duration"
	metricRTT         = "flowattr.connection.rtt"
	metricRetransmits = "flowattr.connection.retransmits"

	attrHostName    = "host.name"
	attrIODirection = "network.io.direction"
	attrLocalOwner  = flowschema.PrefixLocalOwner // + owner_attribute
	attrPeerOwner   = flowschema.PrefixPeerOwner  // + owner_attribute
)

// Histogram bucket bounds, in seconds: connections last from a refused
// connect's fraction of a millisecond to hours; round-trip times run from
// a host's own containers to other continents.
var (
	durationBounds = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600}
	rttBounds      = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}
)

// seriesKey tells apart the series a flow record adds to. Empty strings
// and port 0 stand for absent attributes, which the series then lack.
type seriesKey struct {
	host, local, peer, role, status string
	port                            uint16
	err                             string // only the duration histogram has it
}

// series is what one interval's records of a key added up to.
type series struct {
	sent, received, retransmits          int64
	hasSent, hasReceived, hasRetransmits bool
	duration, rtt                        histogram
}

type histogram struct {
	counts []uint64 // one more than the bounds; nil while empty
	sum    float64
	count  uint64
}

func (h *histogram) add(bounds []float64, v float64) {
	if h.counts == nil {
		h.counts = make([]uint64, len(bounds)+1)
	}
	// Bucket i holds (bounds[i-1], bounds[i]], as Prometheus' le.
	h.counts[sort.SearchFloat64s(bounds, v)]++
	h.sum += v
	h.count++
}

func (h *histogram) merge(o *histogram) {
	if o.counts == nil {
		return
	}
	if h.counts == nil {
		h.counts = make([]uint64, len(o.counts))
	}
	for i, n := range o.counts {
		h.counts[i] += n
	}
	h.sum += o.sum
	h.count += o.count
}

// flowMetrics aggregates the final flow records of an interval by series
// and emits them as delta sums and histograms when the interval ends.
type flowMetrics struct {
	cfg    *Config
	clock  clock.Clock
	next   consumer.Metrics
	logger *zap.Logger
	tel    *metadata.TelemetryBuilder
	// localOwner and peerOwner are the record attributes naming the
	// workloads.
	localOwner, peerOwner string

	mu     sync.Mutex
	since  time.Time // start of the interval being aggregated
	series map[seriesKey]*series
	stop   func() // of the clock callback, nil until Start
}

var _ connector.Logs = (*flowMetrics)(nil)

func newFlowMetrics(set connector.Settings, cfg *Config, c clock.Clock, next consumer.Metrics) (*flowMetrics, error) {
	tel, err := metadata.NewTelemetryBuilder(set.TelemetrySettings)
	if err != nil {
		return nil, err
	}
	return &flowMetrics{
		cfg:        cfg,
		clock:      c,
		next:       next,
		logger:     set.Logger,
		tel:        tel,
		localOwner: attrLocalOwner + cfg.OwnerAttribute,
		peerOwner:  attrPeerOwner + cfg.OwnerAttribute,
		series:     make(map[seriesKey]*series),
	}, nil
}

// Start begins the first interval.
func (c *flowMetrics) Start(context.Context, component.Host) error {
	c.mu.Lock()
	c.since = c.clock.Now()
	c.mu.Unlock()
	c.stop = c.clock.Every(c.cfg.Interval, c.emit)
	return nil
}

// Shutdown emits what the interval so far aggregated: the pipeline
// downstream of a connector shuts down after it.
func (c *flowMetrics) Shutdown(context.Context) error {
	if c.stop != nil {
		c.stop()
		c.emit()
	}
	c.tel.Shutdown()
	return nil
}

// Capabilities says that the connector does not modify the records.
func (*flowMetrics) Capabilities() consumer.Capabilities {
	return consumer.Capabilities{MutatesData: false}
}

// flowRecord is what a flow record contributes to its series.
type flowRecord struct {
	key                         seriesKey
	state                       string
	sent, received, retransmits int64
	start, srttMicros           int64
	hasSent, hasReceived        bool
	hasRetransmits              bool
	rejected                    int64 // counts left out: negative or not integers
}

// read takes what the metrics need from a flow record in one pass over its
// attributes. An attribute of the wrong type counts as absent.
func (c *flowMetrics) read(attrs pcommon.Map, host string) flowRecord {
	r := flowRecord{key: seriesKey{host: host}}
	attrs.Range(func(k string, v pcommon.Value) bool {
		switch k {
		case c.localOwner:
			r.key.local = str(v)
		case c.peerOwner:
			r.key.peer = str(v)
		case flowschema.AttrServerPort:
			r.key.port = flowschema.Port(v)
		case flowschema.AttrFlowRole:
			r.key.role = str(v)
		case flowschema.AttrPeerAttributionStatus:
			r.key.status = str(v)
		case flowschema.AttrFlowError:
			r.key.err = str(v)
		case flowschema.AttrFlowState:
			r.state = str(v)
		case flowschema.AttrFlowBytesSent:
			r.sent, r.hasSent = r.count(v)
		case flowschema.AttrFlowBytesReceived:
			r.received, r.hasReceived = r.count(v)
		case flowschema.AttrFlowRetransmits:
			r.retransmits, r.hasRetransmits = r.count(v)
		case flowschema.AttrFlowStartTime:
			r.start = intValue(v)
		case flowschema.AttrFlowSRTT:
			r.srttMicros = intValue(v)
		}
		return true
	})
	return r
}

func str(v pcommon.Value) string {
	if v.Type() != pcommon.ValueTypeStr {
		return ""
	}
	return v.Str()
}

// intValue returns v's integer, 0 (absent) when v is of another type.
func intValue(v pcommon.Value) int64 {
	if v.Type() != pcommon.ValueTypeInt {
		return 0
	}
	return v.Int()
}

// count reads a counter for a monotonic sum: a negative one or one of the
// wrong type would corrupt the sum, so it is absent and counted as rejected.
func (r *flowRecord) count(v pcommon.Value) (int64, bool) {
	n, ok := flowschema.Count(v)
	if !ok {
		r.rejected++
		return 0, false
	}
	return n, true
}

// addSat returns a+b (both non-negative), saturating at math.MaxInt64: a
// sum must not wrap to a negative value.
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// ConsumeLogs adds every final flow record to its series. Interim records
// (state active) carry a connection's counters so far and are left out,
// so that no byte is counted twice; other records are not flows.
func (c *flowMetrics) ConsumeLogs(ctx context.Context, ld plog.Logs) error {
	var counted, dropped, rejected int64
	c.mu.Lock()
	for _, rl := range ld.ResourceLogs().All() {
		var host string
		if v, ok := rl.Resource().Attributes().Get(attrHostName); ok {
			host = str(v)
		}
		for _, sl := range rl.ScopeLogs().All() {
			for _, lr := range sl.LogRecords().All() {
				if lr.EventName() != flowschema.EventFlow {
					continue
				}
				r := c.read(lr.Attributes(), host)
				if r.state == flowschema.FlowStateActive {
					continue
				}
				s := c.series[r.key]
				if s == nil {
					if len(c.series) >= c.cfg.MaxSeries {
						dropped++
						continue
					}
					s = new(series)
					c.series[r.key] = s
				}
				s.add(&r, int64(lr.Timestamp()))
				counted++
				rejected += r.rejected
			}
		}
	}
	c.mu.Unlock()
	if counted > 0 {
		c.tel.ConnectorFlowmetricsRecords.Add(ctx, counted)
	}
	if dropped > 0 {
		c.tel.ConnectorFlowmetricsRecordsDropped.Add(ctx, dropped)
	}
	if rejected > 0 {
		c.tel.ConnectorFlowmetricsValuesRejected.Add(ctx, rejected)
	}
	return nil
}

func (s *series) add(r *flowRecord, end int64) {
	if r.hasSent {
		s.sent = addSat(s.sent, r.sent)
		s.hasSent = true
	}
	if r.hasReceived {
		s.received = addSat(s.received, r.received)
		s.hasReceived = true
	}
	if r.hasRetransmits {
		s.retransmits = addSat(s.retransmits, r.retransmits)
		s.hasRetransmits = true
	}
	if r.start > 0 && end >= r.start {
		s.duration.add(durationBounds, float64(end-r.start)/1e9)
	}
	// A failed connect never measured a round-trip time.
	if r.state == flowschema.FlowStateClosed && r.srttMicros > 0 {
		s.rtt.add(rttBounds, float64(r.srttMicros)/1e6)
	}
}

// emit sends the interval's series downstream as deltas over
// [start of the interval, now] and starts the next interval.
func (c *flowMetrics) emit() {
	c.mu.Lock()
	all, since, now := c.series, c.since, c.clock.Now()
	c.series, c.since = make(map[seriesKey]*series, len(all)), now
	c.mu.Unlock()
	if len(all) == 0 {
		return
	}
	md := build(all, c.cfg.OwnerAttribute, since, now)
	if err := c.next.ConsumeMetrics(context.Background(), md); err != nil {
		// The interval is over and its deltas are not kept: they are lost.
		n := md.DataPointCount()
		c.tel.ConnectorFlowmetricsDataPointsRefused.Add(context.Background(), int64(n))
		c.logger.Warn("The flow metrics of an interval were refused downstream", zap.Int("data_points", n), zap.Error(err))
	}
}

// build makes one resource per host, in key order so that the output is
// the same for the same input. The byte counters, retransmits and
// round-trip times add up a key's series over their errors.
func build(all map[seriesKey]*series, ownerAttribute string, since, now time.Time) pmetric.Metrics {
	keys := make([]seriesKey, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	start, ts := pcommon.NewTimestampFromTime(since), pcommon.NewTimestampFromTime(now)

	md := pmetric.NewMetrics()
	var m metricSet
	for i, k := range keys {
		if i == 0 || k.host != keys[i-1].host {
			m = newMetricSet(md, k.host)
		}
		s := all[k]
		m.duration.add(k, ownerAttribute, true, &s.duration, durationBounds, start, ts)
		// Keys differing only in err are adjacent: the last of them
		// carries the others' sums.
		if i+1 < len(keys) && sameBase(k, keys[i+1]) {
			all[keys[i+1]].merge(s)
			continue
		}
		if s.hasSent {
			m.io.addSum(k, ownerAttribute, s.sent, start, ts).Attributes().PutStr(attrIODirection, "transmit")
		}
		if s.hasReceived {
			m.io.addSum(k, ownerAttribute, s.received, start, ts).Attributes().PutStr(attrIODirection, "receive")
		}
		if s.hasRetransmits {
			m.retransmits.addSum(k, ownerAttribute, s.retransmits, start, ts)
		}
		m.rtt.add(k, ownerAttribute, false, &s.rtt, rttBounds, start, ts)
	}
	// A metric no series of a host had, such as round-trip times when
	// every connect failed.
	for _, rm := range md.ResourceMetrics().All() {
		rm.ScopeMetrics().At(0).Metrics().RemoveIf(func(m pmetric.Metric) bool {
			if m.Type() == pmetric.MetricTypeSum {
				return m.Sum().DataPoints().Len() == 0
			}
			return m.Histogram().DataPoints().Len() == 0
		})
	}
	return md
}

// merge adds o's sums and round-trip times, but not its duration, which
// has a series of its own per error.
func (s *series) merge(o *series) {
	s.sent = addSat(s.sent, o.sent)
	s.received = addSat(s.received, o.received)
	s.retransmits = addSat(s.retransmits, o.retransmits)
	s.hasSent = s.hasSent || o.hasSent
	s.hasReceived = s.hasReceived || o.hasReceived
	s.hasRetransmits = s.hasRetransmits || o.hasRetransmits
	s.rtt.merge(&o.rtt)
}

func sameBase(a, b seriesKey) bool {
	a.err, b.err = "", ""
	return a == b
}

func compareKeys(a, b seriesKey) int {
	return cmp.Or(
		cmp.Compare(a.host, b.host), cmp.Compare(a.local, b.local), cmp.Compare(a.peer, b.peer),
		cmp.Compare(a.port, b.port), cmp.Compare(a.role, b.role), cmp.Compare(a.status, b.status),
		cmp.Compare(a.err, b.err),
	)
}

// metricSet is one resource's four metrics.
type metricSet struct {
	io, duration, rtt, retransmits metricOut
}

type metricOut struct{ m pmetric.Metric }

func newMetricSet(md pmetric.Metrics, host string) metricSet {
	rm := md.ResourceMetrics().AppendEmpty()
	if host != "" {
		rm.Resource().Attributes().PutStr(attrHostName, host)
	}
	sm := rm.ScopeMetrics().AppendEmpty()
	sm.Scope().SetName(metadata.ScopeName)
	ms := sm.Metrics()
	sum := func(name, unit, desc string) metricOut {
		m := ms.AppendEmpty()
		m.SetName(name)
		m.SetUnit(unit)
		m.SetDescription(desc)
		s := m.SetEmptySum()
		s.SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
		s.SetIsMonotonic(true)
		return metricOut{m}
	}
	hist := func(name, desc string) metricOut {
		m := ms.AppendEmpty()
		m.SetName(name)
		m.SetUnit("s")
		m.SetDescription(desc)
		m.SetEmptyHistogram().SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
		return metricOut{m}
	}
	return metricSet{
		io:          sum(metricIO, "By", "TCP payload bytes of closed connections, by direction."),
		duration:    hist(metricDuration, "Duration of closed and failed connections, from the first SYN to the close."),
		rtt:         hist(metricRTT, "Smoothed round-trip time of closed connections when they closed."),
		retransmits: sum(metricRetransmits, "{segment}", "Retransmitted TCP segments of closed connections."),
	}
}

func (o metricOut) addSum(k seriesKey, ownerAttribute string, v int64, start, ts pcommon.Timestamp) pmetric.NumberDataPoint {
	dp := o.m.Sum().DataPoints().AppendEmpty()
	putAttributes(dp.Attributes(), k, ownerAttribute, false)
	dp.SetIntValue(v)
	dp.SetStartTimestamp(start)
	dp.SetTimestamp(ts)
	return dp
}

func (o metricOut) add(k seriesKey, ownerAttribute string, withErr bool, h *histogram, bounds []float64, start, ts pcommon.Timestamp) {
	if h.count == 0 {
		return
	}
	dp := o.m.Histogram().DataPoints().AppendEmpty()
	putAttributes(dp.Attributes(), k, ownerAttribute, withErr)
	dp.ExplicitBounds().FromRaw(bounds)
	dp.BucketCounts().FromRaw(h.counts)
	dp.SetSum(h.sum)
	dp.SetCount(h.count)
	dp.SetStartTimestamp(start)
	dp.SetTimestamp(ts)
}

func putAttributes(attrs pcommon.Map, k seriesKey, ownerAttribute string, withErr bool) {
	put := func(name, v string) {
		if v != "" {
			attrs.PutStr(name, v)
		}
	}
	put(attrLocalOwner+ownerAttribute, k.local)
	put(attrPeerOwner+ownerAttribute, k.peer)
	if k.port != 0 {
		attrs.PutInt(flowschema.AttrServerPort, int64(k.port))
	}
	put(flowschema.AttrFlowRole, k.role)
	put(flowschema.AttrPeerAttributionStatus, k.status)
	if withErr {
		put(flowschema.AttrFlowError, k.err)
	}
}
