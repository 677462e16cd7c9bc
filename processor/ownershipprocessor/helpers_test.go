package ownershipprocessor

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/processor"

	"github.com/flowattr/flowattr/internal/clock"
	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadata"
	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadatatest"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// testClock is the manual clock of the tests; it counts the callbacks
// registered and not stopped, the processor's background work. Advance and
// Set return once the records the callbacks released are sent, as the
// tests' harnesses' processors are registered with it; Manual's Advance
// does not wait for them.
type testClock struct {
	*clock.Manual
	callbacks atomic.Int64

	mu    sync.Mutex
	procs []*ownershipProcessor
}

func (c *testClock) Advance(d time.Duration) {
	c.Manual.Advance(d)
	c.waitSent()
}

func (c *testClock) Set(t time.Time) {
	c.Manual.Set(t)
	c.waitSent()
}

func (c *testClock) register(p *ownershipProcessor) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.procs = append(c.procs, p)
}

func (c *testClock) waitSent() {
	c.mu.Lock()
	procs := slices.Clone(c.procs)
	c.mu.Unlock()
	for _, p := range procs {
		p.waitSent(context.Background())
	}
}

func newTestClock() *testClock { return &testClock{Manual: clock.NewManual(t0)} }

func (c *testClock) Every(d time.Duration, f func()) (stop func()) {
	c.callbacks.Add(1)
	stopEvery := c.Manual.Every(d, f)
	var once sync.Once
	return func() {
		once.Do(func() {
			stopEvery()
			c.callbacks.Add(-1)
		})
	}
}

func (c *testClock) callbackCount() int { return int(c.callbacks.Load()) }

// offTick is half the period of the clock callback that releases held
// records under the default max_wait: the max_wait of a record held after
// the clock moved by offTick runs out between two calls of the callback,
// where only a ConsumeLogs releases it.
var offTick = holdCheckInterval(createDefaultConfig().MaxWait) / 2

// harness is one pipeline's processor with its sink and telemetry.
type harness struct {
	t     *testing.T
	clock *testClock
	tel   *componenttest.Telemetry
	sink  *consumertest.LogsSink
	proc  processor.Logs
}

func newHarness(t *testing.T, cfg *Config) *harness {
	t.Helper()
	clk := newTestClock()
	return newHarnessWith(t, NewFactoryWithClock(clk), clk, cfg, component.NewID(metadata.Type))
}

func newHarnessWith(t *testing.T, f processor.Factory, clk *testClock, cfg *Config, id component.ID) *harness {
	t.Helper()
	sink := new(consumertest.LogsSink)
	return newHarnessTo(t, f, clk, cfg, id, sink, sink)
}

// newHarnessTo builds a harness whose processor sends to next, which passes
// what it accepts on to sink.
func newHarnessTo(t *testing.T, f processor.Factory, clk *testClock, cfg *Config, id component.ID, next consumer.Logs, sink *consumertest.LogsSink) *harness {
	t.Helper()
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	set := metadatatest.NewSettings(tel)
	set.ID = id
	proc, err := f.CreateLogs(context.Background(), set, cfg, next)
	require.NoError(t, err)
	require.NoError(t, proc.Start(context.Background(), componenttest.NewNopHost()))
	clk.register(proc.(*ownershipProcessor))
	h := &harness{t: t, clock: clk, tel: tel, sink: sink, proc: proc}
	t.Cleanup(func() { require.NoError(t, proc.Shutdown(context.Background())) })
	return h
}

// consume sends one batch of recs and waits until what it released in
// other pipelines is sent too.
func (h *harness) consume(recs ...func(plog.LogRecord)) {
	h.t.Helper()
	require.NoError(h.t, h.proc.ConsumeLogs(context.Background(), logsOf(recs...)))
	h.clock.waitSent()
}

// records returns every record the sink received, in order.
func (h *harness) records() []plog.LogRecord {
	var out []plog.LogRecord
	for _, ld := range h.sink.AllLogs() {
		for _, rl := range ld.ResourceLogs().All() {
			for _, sl := range rl.ScopeLogs().All() {
				for _, lr := range sl.LogRecords().All() {
					out = append(out, lr)
				}
			}
		}
	}
	return out
}

func (h *harness) waitRecords(n int) []plog.LogRecord {
	h.t.Helper()
	require.Eventually(h.t, func() bool { return h.sink.LogRecordCount() >= n }, 5*time.Second, time.Millisecond)
	recs := h.records()
	require.Len(h.t, recs, n)
	return recs
}

func logsOf(recs ...func(plog.LogRecord)) plog.Logs {
	ld := plog.NewLogs()
	rl := ld.ResourceLogs().AppendEmpty()
	rl.Resource().Attributes().PutStr("host.name", "node-a")
	sl := rl.ScopeLogs().AppendEmpty()
	sl.Scope().SetName("ebpfflow")
	for _, r := range recs {
		r(sl.LogRecords().AppendEmpty())
	}
	return ld
}

func claim(addr, owner string, start, end time.Time, source string) func(plog.LogRecord) {
	return func(lr plog.LogRecord) {
		flowschema.PutClaim(lr, flowschema.Claim{
			Address: flowschema.CanonicalAddr(mustAddr(addr)),
			Owner:   owners.Owner{ID: owner, Attributes: []owners.Attribute{{Name: "service.name", Value: owner + "-svc"}}},
			Start:   start,
			End:     end,
			Sender:  source,
		})
	}
}

// flow is a flow record from local to peer, started at start and closed at
// end, with no local owner.
func flow(local, peer string, start, end time.Time) func(plog.LogRecord) {
	return func(lr plog.LogRecord) {
		lr.SetEventName(flowschema.EventFlow)
		lr.SetTimestamp(pcommon.NewTimestampFromTime(end))
		attrs := lr.Attributes()
		attrs.PutStr(flowschema.AttrNetworkLocalAddress, local)
		attrs.PutStr(flowschema.AttrNetworkPeerAddress, peer)
		attrs.PutInt(flowschema.AttrFlowStartTime, start.UnixNano())
	}
}

// ownedFlow is a flow record whose local side names its owner.
func ownedFlow(local, localOwner, peer string, start, end time.Time) func(plog.LogRecord) {
	return func(lr plog.LogRecord) {
		flow(local, peer, start, end)(lr)
		flowschema.PutOwner(lr.Attributes(), flowschema.PrefixLocalOwner, owners.Owner{ID: localOwner})
	}
}

func with(base func(plog.LogRecord), edit func(plog.LogRecord)) func(plog.LogRecord) {
	return func(lr plog.LogRecord) {
		base(lr)
		edit(lr)
	}
}

func str(lr plog.LogRecord, key string) string {
	v, ok := lr.Attributes().Get(key)
	if !ok {
		return "<absent>"
	}
	return v.AsString()
}

// attribution returns status, reason and peer owner ID of a flow record.
func attribution(lr plog.LogRecord) (status, reason, owner string) {
	return str(lr, flowschema.AttrPeerAttributionStatus), str(lr, flowschema.AttrPeerAttributionReason), str(lr, flowschema.PrefixPeerOwner+"id")
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// noHoldConfig sends every record on at once, for rules that do not involve
// the hold.
func noHoldConfig() *Config {
	cfg := createDefaultConfig()
	cfg.MaxWait = 0
	return cfg
}

// consumeEmpty lets time pass for the processor without records.
func (h *harness) consumeEmpty() {
	h.t.Helper()
	require.NoError(h.t, h.proc.ConsumeLogs(context.Background(), plog.NewLogs()))
}
