package ebpfflowreceiver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/localowner"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/metadata"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/metadatatest"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/tracer"
)

// records returns every record the sink received, in order.
func records(sink *consumertest.LogsSink) []plog.LogRecord {
	var out []plog.LogRecord
	for _, ld := range sink.AllLogs() {
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

func split(recs []plog.LogRecord) (flows, claimRecords []plog.LogRecord) {
	for _, lr := range recs {
		if flowschema.IsClaim(lr) {
			claimRecords = append(claimRecords, lr)
		} else {
			flows = append(flows, lr)
		}
	}
	return flows, claimRecords
}

func machineIDFile(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "machine-id")
	require.NoError(t, os.WriteFile(path, []byte("abc123\n"), 0o600))
	return path
}

// claimSpan returns a parsed claim's range in UTC, as at() builds times.
func claimSpan(c flowschema.Claim) [2]time.Time { return [2]time.Time{c.Start.UTC(), c.End.UTC()} }

func sumAttrs(kv ...string) attribute.Set {
	return attribute.NewSet(attribute.String(kv[0], kv[1]))
}

func TestReceiverEmitsFlowsAndClaims(t *testing.T) {
	ev := func(kind tracer.Kind, local string, start, end float64) tracer.Event {
		return tracer.Event{
			Kind: kind, Role: tracer.RoleClient,
			LocalAddr: netip.MustParseAddr(local), LocalPort: 40000,
			PeerAddr: netip.MustParseAddr("198.51.100.1"), PeerPort: 443,
			Start: at(start), StartKnown: true, End: at(end), BytesSent: 10,
		}
	}
	ft := newFakeTracer(
		ev(tracer.KindClosed, "10.0.0.1", 1, 2),
		ev(tracer.KindFailed, "10.0.1.5", 3, 4),
		ev(tracer.KindClosed, "192.0.2.99", 3, 4), // no owner
		ev(tracer.KindClosed, "127.0.0.1", 3, 4),  // loopback, filtered
	)
	ft.stats = tracer.Stats{LostEvents: 3, BirthMapFull: 2, ListenerMapFull: 4, RecursionMisses: 7, RingBytesUsed: 1 << 20, RingBytesSize: 4 << 20}
	clock := newManualClock(at(0))
	cfg := createDefaultConfig()
	cfg.ClaimInterval = time.Hour // only the final claims at shutdown
	cfg.FlushInterval = time.Hour
	cfg.ActiveInterval = 0
	cfg.Ownership.Static.Entries = []owners.Entry{
		{Prefixes: []string{"10.0.0.1"}, ID: "web", Attributes: map[string]string{"service.name": "web"}},
		{Prefixes: []string{"10.0.1.0/24"}, ID: "pool"},
		{Prefixes: []string{"10.0.0.200"}, ID: "idle"},
	}
	require.NoError(t, cfg.Validate())

	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	sink := new(consumertest.LogsSink)
	r, err := newFlowReceiver(metadatatest.NewSettings(tel), cfg, sink, testEnvironment(ft, clock, machineIDFile(t), "192.0.2.10"))
	require.NoError(t, err)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	<-ft.delivered

	metadatatest.AssertEqualEbpfflowKernelEventsLost(t, tel, []metricdata.DataPoint[int64]{{Value: 3}}, metricdatatest.IgnoreTimestamp())
	metadatatest.AssertEqualEbpfflowKernelBirthMapFull(t, tel, []metricdata.DataPoint[int64]{{Value: 2}}, metricdatatest.IgnoreTimestamp())
	metadatatest.AssertEqualEbpfflowKernelListenerMapFull(t, tel, []metricdata.DataPoint[int64]{{Value: 4}}, metricdatatest.IgnoreTimestamp())
	metadatatest.AssertEqualEbpfflowKernelRecursionMisses(t, tel, []metricdata.DataPoint[int64]{{Value: 7}}, metricdatatest.IgnoreTimestamp())
	metadatatest.AssertEqualEbpfflowRingFillRatio(t, tel, []metricdata.DataPoint[float64]{{Value: 0.25}}, metricdatatest.IgnoreTimestamp())

	clock.Set(at(5))
	require.NoError(t, r.Shutdown(context.Background()))

	// Resource and scope.
	require.Positive(t, sink.LogRecordCount())
	rl := sink.AllLogs()[0].ResourceLogs().At(0)
	host, _ := os.Hostname()
	assert.Equal(t, map[string]any{"host.name": host, "host.id": "abc123", "os.type": "linux"}, rl.Resource().Attributes().AsRaw())
	assert.Equal(t, metadata.ScopeName, rl.ScopeLogs().At(0).Scope().Name())

	flows, claimRecords := split(records(sink))
	require.Len(t, flows, 3)
	localOwners := []string{}
	for _, lr := range flows {
		o, ok := flowschema.ReadOwner(lr.Attributes(), flowschema.PrefixLocalOwner)
		localOwners = append(localOwners, fmt.Sprint(ok, " ", o.ID))
	}
	assert.Equal(t, []string{"true web", "true pool", "false "}, localOwners)
	webOwner, _ := flows[0].Attributes().Get("flowattr.local.owner.service.name")
	assert.Equal(t, "web", webOwner.Str())

	claims := map[string]flowschema.Claim{}
	for _, lr := range claimRecords {
		c, err := flowschema.ParseClaim(lr)
		require.NoError(t, err)
		claims[c.Address.String()+" "+c.Owner.ID] = c
		assert.Equal(t, host, c.Sender)
	}
	assert.Len(t, claims, 4)
	assert.Equal(t, [2]time.Time{at(0), at(5)}, claimSpan(claims["10.0.0.1 web"]))
	assert.Equal(t, [2]time.Time{at(0), at(5)}, claimSpan(claims["10.0.0.200 idle"]), "idle owned address claimed")
	assert.Equal(t, [2]time.Time{at(0), at(5)}, claimSpan(claims["192.0.2.10 "+host]), "host address claimed by the host")
	assert.Equal(t, [2]time.Time{at(3), at(4)}, claimSpan(claims["10.0.1.5 pool"]), "CIDR-owned address claimed from its flows")

	// Counters that saw nothing are exported at zero.
	metadatatest.AssertEqualEbpfflowFlowsEmitted(t, tel, []metricdata.DataPoint[int64]{
		{Value: 2, Attributes: sumAttrs("state", "closed")},
		{Value: 1, Attributes: sumAttrs("state", "failed")},
		{Value: 0, Attributes: sumAttrs("state", "active")},
	}, metricdatatest.IgnoreTimestamp())
	metadatatest.AssertEqualEbpfflowFlowsFiltered(t, tel, []metricdata.DataPoint[int64]{{Value: 1}}, metricdatatest.IgnoreTimestamp())
	metadatatest.AssertEqualEbpfflowFlowsUnowned(t, tel, []metricdata.DataPoint[int64]{
		{Value: 1, Attributes: sumAttrs("reason", "unknown_address")},
		{Value: 0, Attributes: sumAttrs("reason", "owner_changed")},
	}, metricdatatest.IgnoreTimestamp())
	metadatatest.AssertEqualEbpfflowQueueDropped(t, tel, []metricdata.DataPoint[int64]{{Value: 0}}, metricdatatest.IgnoreTimestamp())
	metadatatest.AssertEqualEbpfflowClaimsEmitted(t, tel, []metricdata.DataPoint[int64]{
		{Value: 1, Attributes: sumAttrs("basis", "flow")},
		{Value: 3, Attributes: sumAttrs("basis", "source")},
	}, metricdatatest.IgnoreTimestamp())
}

// Every counter is exported from Start on, at zero under each attribute set
// known up front, so that an alert on queue drops, unowned flows or file
// load errors sees 0, not no data, until they happen. The file's loads are
// counted only when the file source is on.
func TestReceiverCountersExportedAtZeroFromStart(t *testing.T) {
	for _, withFile := range []bool{false, true} {
		t.Run(fmt.Sprintf("file=%v", withFile), func(t *testing.T) {
			cfg := createDefaultConfig()
			if withFile {
				cfg.Ownership.File.Path = filepath.Join(t.TempDir(), "not-written-yet.yaml")
			}
			require.NoError(t, cfg.Validate())
			tel := componenttest.NewTelemetry()
			t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
			ft := newFakeTracer()
			r, err := newFlowReceiver(metadatatest.NewSettings(tel), cfg, consumertest.NewNop(), testEnvironment(ft, newManualClock(at(0)), machineIDFile(t)))
			require.NoError(t, err)
			require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
			t.Cleanup(func() { require.NoError(t, r.Shutdown(context.Background())) })
			<-ft.delivered

			opt := metricdatatest.IgnoreTimestamp()
			zero := []metricdata.DataPoint[int64]{{Value: 0}}
			metadatatest.AssertEqualEbpfflowQueueDropped(t, tel, zero, opt)
			metadatatest.AssertEqualEbpfflowFlowsFiltered(t, tel, zero, opt)
			metadatatest.AssertEqualEbpfflowFlowsEmitted(t, tel, []metricdata.DataPoint[int64]{
				{Attributes: sumAttrs("state", "closed")}, {Attributes: sumAttrs("state", "failed")}, {Attributes: sumAttrs("state", "active")},
			}, opt)
			metadatatest.AssertEqualEbpfflowFlowsUnowned(t, tel, []metricdata.DataPoint[int64]{
				{Attributes: sumAttrs("reason", "unknown_address")}, {Attributes: sumAttrs("reason", "owner_changed")},
			}, opt)
			metadatatest.AssertEqualEbpfflowClaimsEmitted(t, tel, []metricdata.DataPoint[int64]{
				{Attributes: sumAttrs("basis", "flow")}, {Attributes: sumAttrs("basis", "source")},
			}, opt)
			if !withFile {
				_, err := tel.GetMetric("otelcol_ebpfflow_ownership_file_reloads")
				require.Error(t, err, "no file, no file loads")
				return
			}
			metadatatest.AssertEqualEbpfflowOwnershipFileReloads(t, tel, []metricdata.DataPoint[int64]{
				{Attributes: sumAttrs("result", "success")},
				{Value: 1, Attributes: sumAttrs("result", "error")}, // the missing file, at start
				{Attributes: sumAttrs("result", "deferred")},
			}, opt)
		})
	}
}

func TestReceiverBatchesBySize(t *testing.T) {
	var events []tracer.Event
	for i := range 7 {
		events = append(events, tracer.Event{
			Kind: tracer.KindClosed, Role: tracer.RoleServer,
			LocalAddr: netip.MustParseAddr("10.0.0.1"), LocalPort: 80,
			PeerAddr: netip.MustParseAddr("10.0.0.2"), PeerPort: uint16(40000 + i),
			Start: at(1), StartKnown: true, End: at(2),
		})
	}
	ft := newFakeTracer(events...)
	cfg := createDefaultConfig()
	cfg.MaxBatchSize = 3
	cfg.FlushInterval = time.Hour
	cfg.ClaimInterval = time.Hour
	cfg.ActiveInterval = 0
	cfg.Ownership.Static.HostAddresses = false
	sink := new(consumertest.LogsSink)
	r, err := newFlowReceiver(metadatatest.NewSettings(componenttest.NewTelemetry()), cfg, sink, testEnvironment(ft, newManualClock(at(0)), machineIDFile(t)))
	require.NoError(t, err)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	<-ft.delivered
	require.Eventually(t, func() bool { return len(sink.AllLogs()) == 2 }, 5*time.Second, time.Millisecond)
	require.NoError(t, r.Shutdown(context.Background()))
	var sizes []int
	for _, ld := range sink.AllLogs() {
		sizes = append(sizes, ld.LogRecordCount())
	}
	assert.Equal(t, []int{3, 3, 1}, sizes, "two full batches, the rest at shutdown")
}

// TestReceiverBackPressure blocks the pipeline and checks that the ring
// reader still never waits: events beyond the queue are dropped and counted,
// and every event is either emitted or counted.
func TestReceiverBackPressure(t *testing.T) {
	const total = 10
	var events []tracer.Event
	for i := range total {
		events = append(events, tracer.Event{
			Kind: tracer.KindClosed, Role: tracer.RoleClient,
			LocalAddr: netip.MustParseAddr("10.0.0.1"), LocalPort: uint16(40000 + i),
			PeerAddr: netip.MustParseAddr("10.0.0.2"), PeerPort: 80,
			Start: at(1), StartKnown: true, End: at(2),
		})
	}
	ft := newFakeTracer(events...)
	entered := make(chan struct{})
	release := make(chan struct{})
	// The first event goes alone into a batch that blocks in the pipeline;
	// the rest arrive while it is blocked.
	ft.beforeEvent = func(i int) {
		if i == 1 {
			<-entered
		}
	}
	sink := new(consumertest.LogsSink)
	blocked := true
	next, err := consumer.NewLogs(func(ctx context.Context, ld plog.Logs) error {
		if blocked {
			blocked = false
			close(entered)
			<-release
		}
		return sink.ConsumeLogs(ctx, ld)
	})
	require.NoError(t, err)

	cfg := createDefaultConfig()
	cfg.QueueSize = 2
	cfg.MaxBatchSize = 1
	cfg.FlushInterval = time.Hour
	cfg.ClaimInterval = time.Hour
	cfg.ActiveInterval = 0
	cfg.Ownership.Static.HostAddresses = false
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	r, err := newFlowReceiver(metadatatest.NewSettings(tel), cfg, next, testEnvironment(ft, newManualClock(at(0)), machineIDFile(t)))
	require.NoError(t, err)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))

	select {
	case <-ft.delivered:
	case <-time.After(10 * time.Second):
		t.Fatal("the ring reader waited on a blocked pipeline")
	}
	// One event is in the blocked batch, two fill the queue, the rest drop.
	metadatatest.AssertEqualEbpfflowQueueDropped(t, tel, []metricdata.DataPoint[int64]{{Value: total - 3}}, metricdatatest.IgnoreTimestamp())
	close(release)
	require.NoError(t, r.Shutdown(context.Background()))
	flows, _ := split(records(sink))
	assert.Len(t, flows, 3)
	metadatatest.AssertEqualEbpfflowFlowsEmitted(t, tel, []metricdata.DataPoint[int64]{
		{Value: 3, Attributes: sumAttrs("state", "closed")},
		{Value: 0, Attributes: sumAttrs("state", "failed")},
		{Value: 0, Attributes: sumAttrs("state", "active")},
	}, metricdatatest.IgnoreTimestamp())
}

func TestReceiverActiveReports(t *testing.T) {
	ft := newFakeTracer()
	ft.active = []tracer.Event{{
		Kind: tracer.KindActive, Role: tracer.RoleServer,
		LocalAddr: netip.MustParseAddr("10.0.1.5"), LocalPort: 5432,
		PeerAddr: netip.MustParseAddr("10.0.0.2"), PeerPort: 40000,
		Start: at(-3600), StartKnown: false, End: at(8), BytesReceived: 1 << 30, Cookie: 17,
	}}
	clock := newManualClock(at(0))
	cfg := createDefaultConfig()
	cfg.ActiveInterval = 10 * time.Millisecond // below the validated minimum, to keep the test fast
	cfg.ClaimInterval = time.Hour
	cfg.FlushInterval = time.Hour
	cfg.Ownership.Static.HostAddresses = false
	cfg.Ownership.Static.Entries = []owners.Entry{{Prefixes: []string{"10.0.1.0/24"}, ID: "db"}}
	sink := new(consumertest.LogsSink)
	r, err := newFlowReceiver(metadatatest.NewSettings(componenttest.NewTelemetry()), cfg, sink, testEnvironment(ft, clock, machineIDFile(t)))
	require.NoError(t, err)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	<-ft.activeCalled
	clock.Set(at(10))
	require.NoError(t, r.Shutdown(context.Background()))

	flows, claimRecords := split(records(sink))
	require.NotEmpty(t, flows)
	attrs := flows[0].Attributes().AsRaw()
	assert.Equal(t, "active", attrs[flowschema.AttrFlowState])
	assert.Equal(t, true, attrs[flowschema.AttrFlowStartPredatesCapture])
	assert.Equal(t, "db", attrs["flowattr.local.owner.id"])
	require.Len(t, claimRecords, 1, "one claim however many interim reports")
	c, err := flowschema.ParseClaim(claimRecords[0])
	require.NoError(t, err)
	assert.Equal(t, "10.0.1.5", c.Address.String())
	assert.Equal(t, [2]time.Time{at(0), at(8)}, claimSpan(c), "an old connection claims only from the interval start")
}

// An active pass over more open connections than the queues hold, while the
// pipeline is blocked, must not take the ring's queue: a connection that
// closes meanwhile is queued, not dropped, and its record goes out before
// the interim records still waiting.
func TestActivePassLeavesRingQueueToCloses(t *testing.T) {
	closing := tracer.Event{
		Kind: tracer.KindClosed, Role: tracer.RoleClient,
		LocalAddr: netip.MustParseAddr("10.0.0.1"), LocalPort: 40000,
		PeerAddr: netip.MustParseAddr("10.0.0.2"), PeerPort: 80,
		Start: at(1), StartKnown: true, End: at(2),
	}
	ft := newFakeTracer(closing)
	for i := range interimQueueSize + 100 {
		ft.active = append(ft.active, tracer.Event{
			Kind: tracer.KindActive, Role: tracer.RoleServer,
			LocalAddr: netip.MustParseAddr("10.0.0.1"), LocalPort: 443,
			PeerAddr: netip.MustParseAddr("10.0.0.3"), PeerPort: uint16(1000 + i),
			Start: at(1), StartKnown: true, End: at(2),
		})
	}
	var r *flowReceiver
	entered := make(chan struct{})
	release := make(chan struct{})
	// The close arrives once the pipeline is blocked and the active pass
	// is waiting for room (in either queue, should it take the ring's).
	ft.beforeEvent = func(int) {
		<-entered
		for len(r.interim) < cap(r.interim) && len(r.queue) < cap(r.queue) {
			runtime.Gosched()
		}
	}
	var states []string
	blocked := true
	next, err := consumer.NewLogs(func(_ context.Context, ld plog.Logs) error {
		if blocked {
			blocked = false
			close(entered)
			<-release
		}
		for _, rl := range ld.ResourceLogs().All() {
			for _, sl := range rl.ScopeLogs().All() {
				for _, lr := range sl.LogRecords().All() {
					if v, ok := lr.Attributes().Get(flowschema.AttrFlowState); ok {
						states = append(states, v.Str())
					}
				}
			}
		}
		return nil
	})
	require.NoError(t, err)

	cfg := createDefaultConfig()
	cfg.QueueSize = 10
	cfg.MaxBatchSize = 5
	cfg.ActiveInterval = 10 * time.Millisecond // below the validated minimum, to keep the test fast
	cfg.FlushInterval = time.Hour
	cfg.ClaimInterval = time.Hour
	cfg.Ownership.Static.HostAddresses = false
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	r, err = newFlowReceiver(metadatatest.NewSettings(tel), cfg, next, testEnvironment(ft, newManualClock(at(0)), machineIDFile(t)))
	require.NoError(t, err)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	<-ft.delivered
	close(release)
	require.NoError(t, r.Shutdown(context.Background()))

	metadatatest.AssertEqualEbpfflowQueueDropped(t, tel, []metricdata.DataPoint[int64]{{Value: 0}}, metricdatatest.IgnoreTimestamp())
	closedAt := slices.Index(states, "closed")
	require.NotEqual(t, -1, closedAt, "the close's record went out")
	// Before it only the batch that was blocked: not the interim queue's
	// thousand.
	assert.Equal(t, cfg.MaxBatchSize, closedAt, "what went out before the close")
}

func TestReceiverStartErrors(t *testing.T) {
	cfg := createDefaultConfig()
	env := testEnvironment(nil, newManualClock(at(0)), machineIDFile(t))
	env.newTracer = func(tracer.Options) (flowTracer, error) {
		return nil, fmt.Errorf("%w: BTF not found at /sys/kernel/btf/vmlinux", tracer.ErrUnsupported)
	}
	r, err := newFlowReceiver(metadatatest.NewSettings(componenttest.NewTelemetry()), cfg, consumertest.NewNop(), env)
	require.NoError(t, err)
	err = r.Start(context.Background(), componenttest.NewNopHost())
	require.ErrorIs(t, err, tracer.ErrUnsupported)
	assert.ErrorContains(t, err, "BTF not found")
	assert.ErrorContains(t, err, "CAP_BPF and CAP_PERFMON")
	require.NoError(t, r.Shutdown(context.Background()))

	env.newTracer = func(tracer.Options) (flowTracer, error) { return nil, errors.New("verifier said no") }
	r, err = newFlowReceiver(metadatatest.NewSettings(componenttest.NewTelemetry()), cfg, consumertest.NewNop(), env)
	require.NoError(t, err)
	err = r.Start(context.Background(), componenttest.NewNopHost())
	assert.EqualError(t, err, "the ebpfflow receiver cannot load its eBPF programs: verifier said no")
	require.NoError(t, r.Shutdown(context.Background()))
}

// The host, as the owner of its own addresses, is held to the owner limits
// like every other owner of the sources.
func TestReceiverRefusesHostOwnerBeyondLimits(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.Ownership.OwnerLimits.MaxValueLength = 4 // the machine ID, host.id, is 6 bytes
	require.NoError(t, cfg.Validate())
	r, err := newFlowReceiver(metadatatest.NewSettings(componenttest.NewTelemetry()), cfg, consumertest.NewNop(),
		testEnvironment(newFakeTracer(), newManualClock(at(0)), machineIDFile(t)))
	require.NoError(t, err)
	err = r.Start(context.Background(), componenttest.NewNopHost())
	assert.EqualError(t, err, `ownership.static.host_addresses: the host as an owner is beyond ownership.owner_limits: attributes: "host.id": value is 6 bytes, more than max_value_length (4)`)
	require.NoError(t, r.Shutdown(context.Background()))
}

func TestReceiverPassesOptionsToTracer(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.RingBufferSize = 1 << 22
	cfg.MaxConnections = 1000
	var got tracer.Options
	ft := newFakeTracer()
	env := testEnvironment(ft, newManualClock(at(0)), machineIDFile(t))
	env.newTracer = func(o tracer.Options) (flowTracer, error) { got = o; return ft, nil }
	r, err := newFlowReceiver(metadatatest.NewSettings(componenttest.NewTelemetry()), cfg, consumertest.NewNop(), env)
	require.NoError(t, err)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	require.NoError(t, r.Shutdown(context.Background()))
	assert.Equal(t, tracer.Options{RingBufferSize: 1 << 22, MaxConnections: 1000}, got)
}

// ownerChangeTest is a receiver whose only ownership source is a file,
// holding before at its start (at 0 s); the file changes to after at 10 s,
// before the receiver reads its first event. Claims and flushes wait
// for the shutdown, at 20 s.
type ownerChangeTest struct {
	tel   *componenttest.Telemetry
	sink  *consumertest.LogsSink
	flows []plog.LogRecord
	spans map[string][2]time.Time // claim ranges by "address owner"
}

// fileOwnershipConfig is a receiver configuration whose only owners come
// from the ownership file at path, polled fast, and whose claim and flush
// intervals never elapse within a test.
func fileOwnershipConfig(t *testing.T, path string) *Config {
	t.Helper()
	cfg := createDefaultConfig()
	cfg.ClaimInterval = time.Hour
	cfg.FlushInterval = time.Hour
	cfg.ActiveInterval = 0
	cfg.Ownership.Static.HostAddresses = false
	cfg.Ownership.File = FileSourceConfig{Path: path, PollInterval: time.Hour}
	require.NoError(t, cfg.Validate())
	cfg.Ownership.File.PollInterval = 10 * time.Millisecond // below the validated minimum, to keep the test fast
	return cfg
}

func runOwnerChange(t *testing.T, before, after string, events ...tracer.Event) *ownerChangeTest {
	t.Helper()
	path := filepath.Join(t.TempDir(), "owners.yaml")
	replaceFile(t, path, before)
	ft := newFakeTracer(events...)
	clock := newManualClock(at(0))
	cfg := fileOwnershipConfig(t, path)
	oc := &ownerChangeTest{tel: componenttest.NewTelemetry(), sink: new(consumertest.LogsSink), spans: map[string][2]time.Time{}}
	t.Cleanup(func() { require.NoError(t, oc.tel.Shutdown(context.Background())) })
	r, err := newFlowReceiver(metadatatest.NewSettings(oc.tel), cfg, oc.sink, testEnvironment(ft, clock, machineIDFile(t)))
	require.NoError(t, err)
	ft.beforeEvent = func(i int) {
		if i > 0 {
			return
		}
		clock.Set(at(10))
		replaceFile(t, path, after)
		// A load counts as a success once the merged map uses it.
		assert.Eventually(t, func() bool { return reloadSuccesses(oc.tel) == 2 }, 5*time.Second, 5*time.Millisecond,
			"the file source loads the change")
	}
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	<-ft.delivered
	clock.Set(at(20))
	require.NoError(t, r.Shutdown(context.Background()))

	var claimRecords []plog.LogRecord
	oc.flows, claimRecords = split(records(oc.sink))
	for _, lr := range claimRecords {
		c, err := flowschema.ParseClaim(lr)
		require.NoError(t, err)
		oc.spans[c.Address.String()+" "+c.Owner.ID] = claimSpan(c)
	}
	return oc
}

// reloadSuccesses returns how many ownership file loads tel counted as
// successes.
func reloadSuccesses(tel *componenttest.Telemetry) int64 {
	m, err := tel.GetMetric("otelcol_ebpfflow_ownership_file_reloads")
	if err != nil {
		return 0
	}
	sum, _ := m.Data.(metricdata.Sum[int64])
	for _, dp := range sum.DataPoints {
		if v, _ := dp.Attributes.Value("result"); v.AsString() == localowner.ReloadSuccess {
			return dp.Value
		}
	}
	return 0
}

// ownershipFile returns an ownership file of one entry per prefix, owner ID
// pair.
func ownershipFile(kv ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, "- {prefixes: [%s], id: %s}\n", kv[i], kv[i+1])
	}
	return b.String()
}

// localOwners returns the local owner ID of each flow record, "" for none.
func (oc *ownerChangeTest) localOwners() []string {
	var ids []string
	for _, lr := range oc.flows {
		o, _ := flowschema.ReadOwner(lr.Attributes(), flowschema.PrefixLocalOwner)
		ids = append(ids, o.ID)
	}
	return ids
}

// closedFlow is a client connection from local to a peer outside every
// ownership source.
func closedFlow(local string, start, end float64) tracer.Event {
	return tracer.Event{
		Kind: tracer.KindClosed, Role: tracer.RoleClient,
		LocalAddr: netip.MustParseAddr(local), LocalPort: 40000,
		PeerAddr: netip.MustParseAddr("198.51.100.1"), PeerPort: 443,
		Start: at(start), StartKnown: true, End: at(end),
	}
}

// A flow record names its local owner only if that owner held the address
// for the whole flow as far as the receiver knows: the processor applies the
// record's local side as a claim from the flow's start.
func TestReceiverLeavesOutOwnersNewerThanTheFlow(t *testing.T) {
	oc := runOwnerChange(t,
		ownershipFile("10.0.0.1", "a", "10.0.1.0/24", "pool", "10.0.1.5", "x", "10.0.2.0/24", "other"),
		ownershipFile("10.0.0.1", "b", "10.0.1.0/24", "pool", "10.0.2.0/24", "other"),
		closedFlow("10.0.0.1", 5, 12),    // began under a, now b's
		closedFlow("10.0.0.1", 11, 12),   // began under b
		closedFlow("10.0.1.5", 5, 12),    // began under x, now falls back to pool
		closedFlow("10.0.2.7", 5, 12),    // its owner never changed
		closedFlow("192.0.2.99", 5, 12),  // no owner at all
		closedFlow("10.0.2.8", -100, 12), // before the receiver started: owned as far as it knows
	)
	assert.Equal(t, []string{"", "b", "", "other", "", "other"}, oc.localOwners())
	metadatatest.AssertEqualEbpfflowFlowsUnowned(t, oc.tel, []metricdata.DataPoint[int64]{
		{Value: 2, Attributes: sumAttrs("reason", "owner_changed")},
		{Value: 1, Attributes: sumAttrs("reason", "unknown_address")},
	}, metricdatatest.IgnoreTimestamp())
	// Claims still cover what the flows showed once the owner was
	// known, the owners the file change removed until it did, and the
	// owner an address fell back to from then.
	assert.Equal(t, map[string][2]time.Time{
		"10.0.0.1 a":     {at(0), at(10)},
		"10.0.0.1 b":     {at(10), at(20)},
		"10.0.1.5 x":     {at(0), at(10)},
		"10.0.1.5 pool":  {at(10), at(20)},
		"10.0.2.7 other": {at(5), at(12)},
		"10.0.2.8 other": {at(0), at(12)},
	}, oc.spans)
}

// A connection capture found already open has no known birth: its start is
// only when capture first saw it, so it may predate an owner change the
// receiver saw. It names its local owner only if that owner predates capture.
func TestReceiverLeavesOutNewOwnersOfConnectionsOfUnknownStart(t *testing.T) {
	unknownBirth := func(local string) tracer.Event {
		ev := closedFlow(local, 12, 12)
		ev.StartKnown = false
		return ev
	}
	oc := runOwnerChange(t, ownershipFile("10.0.0.1", "a", "10.0.0.2", "c"), ownershipFile("10.0.0.1", "b", "10.0.0.2", "c"),
		unknownBirth("10.0.0.1"), // may have begun under a, now b's
		unknownBirth("10.0.0.2"), // c's since before capture
	)
	assert.Equal(t, []string{"", "c"}, oc.localOwners())
	metadatatest.AssertEqualEbpfflowFlowsUnowned(t, oc.tel, []metricdata.DataPoint[int64]{
		{Value: 1, Attributes: sumAttrs("reason", "owner_changed")},
		{Value: 0, Attributes: sumAttrs("reason", "unknown_address")},
	}, metricdatatest.IgnoreTimestamp())
}

// The tracer converts a flow's start to wall-clock time when it reads it,
// with the clock offset of that moment: after the wall clock steps forward,
// a flow that began before an owner change reads as if it began after it.
// Starts are compared with the change on the kernel's boot clock instead.
func TestReceiverComparesFlowStartsOnTheBootClock(t *testing.T) {
	// The wall clock stepped 60 s forward after the change at 10 s.
	stepped := func(start, end float64) tracer.Event {
		ev := closedFlow("10.0.0.1", start+60, end+60)
		ev.StartBoot = bootAt(start)
		return ev
	}
	oc := runOwnerChange(t, ownershipFile("10.0.0.1", "a"), ownershipFile("10.0.0.1", "b"),
		stepped(5, 7),   // began under a
		stepped(11, 13), // began under b
	)
	assert.Equal(t, []string{"", "b"}, oc.localOwners())
}

// After a forward step the tracer converts starts with the old clock offset
// for up to a second: a flow that began after the change on the boot clock
// can read as if it began before it on the wall clock. The processor claims
// from that wall-clock start, so such a flow is not stamped either.
func TestReceiverStampsOnlyFlowsAfterSinceOnBothClocks(t *testing.T) {
	ev := closedFlow("10.0.0.1", 9.5, 9.8) // a 0.8 s step not yet applied
	ev.StartBoot = bootAt(10.3)            // began after the change at 10 s
	oc := runOwnerChange(t, ownershipFile("10.0.0.0/24", "a"), ownershipFile("10.0.0.0/24", "a", "10.0.0.1", "b"), ev)
	assert.Equal(t, []string{""}, oc.localOwners())
}

// An address that gets an owner is claimed at once, not at the next
// claim_interval: peers hold flows to it until a claim covers it. Here the
// interval is an hour, and the claim must arrive while the receiver runs.
func TestReceiverClaimsNewAddressesAtOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "owners.yaml")
	replaceFile(t, path, ownershipFile("10.0.0.1", "a"))
	ft := newFakeTracer()
	clock := newManualClock(at(0))
	cfg := fileOwnershipConfig(t, path)
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	sink := new(consumertest.LogsSink)
	r, err := newFlowReceiver(metadatatest.NewSettings(tel), cfg, sink, testEnvironment(ft, clock, machineIDFile(t)))
	require.NoError(t, err)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	t.Cleanup(func() { require.NoError(t, r.Shutdown(context.Background())) })
	<-ft.delivered

	clock.Set(at(10))
	replaceFile(t, path, ownershipFile("10.0.0.1", "a", "10.0.0.2", "b"))
	var got []flowschema.Claim
	require.Eventually(t, func() bool {
		_, claimRecords := split(records(sink))
		got = got[:0]
		for _, lr := range claimRecords {
			c, err := flowschema.ParseClaim(lr)
			require.NoError(t, err)
			got = append(got, c)
		}
		return len(got) > 0
	}, 5*time.Second, 5*time.Millisecond, "no claim of the new address before the claim interval closed")
	require.Len(t, got, 1, "only the new address is claimed early")
	assert.Equal(t, "10.0.0.2", got[0].Address.String())
	assert.Equal(t, "b", got[0].Owner.ID)
	assert.Equal(t, [2]time.Time{at(10), at(10)}, claimSpan(got[0]), "claimed from when it was published")
}
