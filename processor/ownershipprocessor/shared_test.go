package ownershipprocessor

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/processor"

	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadata"
	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadatatest"
)

// Two pipelines list the same processor ID: claims arrive through one,
// flows through the other, and both see one store.
func TestPipelinesShareOneStore(t *testing.T) {
	clk := newTestClock()
	f := NewFactoryWithClock(clk)
	cfg := createDefaultConfig()
	id := component.NewID(metadata.Type)
	claims := newHarnessWith(t, f, clk, cfg, id)
	flows := newHarnessWith(t, f, clk, cfg, id)
	// One set of clock callbacks for the shared store: prune and hold.
	require.Equal(t, 2, clk.callbackCount())

	flows.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-30*time.Second), t0))
	require.Equal(t, 0, flows.sink.LogRecordCount(), "held in the flow pipeline")

	claims.consume(claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, ""))
	assert.Equal(t, 0, claims.sink.LogRecordCount())
	recs := flows.records()
	require.Len(t, recs, 1, "the claim pipeline releases the flow pipeline's record to the flow pipeline")
	_, _, owner := attribution(recs[0])
	assert.Equal(t, "checkout", owner)

	// Shutting one pipeline down keeps the store for the other.
	require.NoError(t, claims.proc.Shutdown(context.Background()))
	assert.Equal(t, 2, clk.callbackCount(), "still running for the flow pipeline")
	flows.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-10*time.Second), t0))
	_, _, owner = attribution(flows.records()[1])
	assert.Equal(t, "checkout", owner)

	// The last shutdown stops the shared callbacks and forgets the store.
	require.NoError(t, flows.proc.Shutdown(context.Background()))
	assert.Equal(t, 0, clk.callbackCount())
	again := newHarnessWith(t, f, clk, noHoldConfig(), id)
	again.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-10*time.Second), t0))
	_, reason, _ := attribution(again.records()[0])
	assert.Equal(t, "no_claim_yet", reason, "a new store after every user shut down")
}

func TestDistinctIDsHaveDistinctStores(t *testing.T) {
	clk := newTestClock()
	f := NewFactoryWithClock(clk)
	a := newHarnessWith(t, f, clk, noHoldConfig(), component.NewIDWithName(metadata.Type, "a"))
	b := newHarnessWith(t, f, clk, noHoldConfig(), component.NewIDWithName(metadata.Type, "b"))
	a.consume(claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, ""))
	b.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-10*time.Second), t0))
	_, reason, _ := attribution(b.records()[0])
	assert.Equal(t, "no_claim_yet", reason)
}

// A node's two roles on one store: ownership trusts its pipeline (the
// local receiver's flows and claims), ownership/peers names the same store
// and checks the certificates of the claims its pipeline receives.
func TestProcessorsShareNamedStore(t *testing.T) {
	clk := newTestClock()
	f := NewFactoryWithClock(clk)
	local := noHoldConfig()
	peers := noHoldConfig()
	peers.Store = "ownership"
	peers.SenderIdentity = senderIdentityCertificate
	flows := newHarnessWith(t, f, clk, local, component.NewID(metadata.Type))
	claims := newHarnessWith(t, f, clk, peers, component.NewIDWithName(metadata.Type, "peers"))
	require.Equal(t, 1, clk.callbackCount(), "one store, one prune callback")

	// A peer with a certificate naming its sender claims 10.0.0.2; an
	// uncertified batch claiming 10.0.0.3 is refused.
	require.NoError(t, claims.proc.ConsumeLogs(grpcPeer(clientCert("node-b"), true),
		logsOf(claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, "node-b"))))
	require.NoError(t, claims.proc.ConsumeLogs(context.Background(),
		logsOf(claim("10.0.0.3", "evil", t0.Add(-time.Minute), t0, "node-b"))))
	assertCounter(t, claims.tel, "otelcol_processor_ownership_claims_rejected", map[string]string{"reason": "unauthenticated_sender"}, 1)
	// The local receiver's claim and flow need no certificate.
	flows.consume(
		claim("10.0.0.4", "cart", t0.Add(-time.Minute), t0, "node-a"),
		ownedFlow("10.0.0.5", "frontend", "10.0.0.2", t0.Add(-time.Minute), t0),
	)
	assertCounter(t, flows.tel, "otelcol_processor_ownership_claims_applied", nil, 1)
	assertCounter(t, flows.tel, "otelcol_processor_ownership_local_claims_applied", nil, 1)

	flows.consume(
		flow("10.0.0.1", "10.0.0.2", t0.Add(-30*time.Second), t0),
		flow("10.0.0.1", "10.0.0.3", t0.Add(-30*time.Second), t0),
		flow("10.0.0.1", "10.0.0.4", t0.Add(-30*time.Second), t0),
		flow("10.0.0.1", "10.0.0.5", t0.Add(-30*time.Second), t0),
	)
	recs := flows.records()
	require.Len(t, recs, 5)
	for i, want := range []string{"checkout", "<absent>", "cart", "frontend"} {
		_, _, owner := attribution(recs[i+1])
		assert.Equal(t, want, owner, "flow %d", i)
	}

	// Either processor's shutdown leaves the store to the other; the last
	// one forgets it.
	require.NoError(t, flows.proc.Shutdown(context.Background()))
	require.Equal(t, 1, clk.callbackCount())
	require.NoError(t, claims.proc.Shutdown(context.Background()))
	require.Equal(t, 0, clk.callbackCount())
	again := newHarnessWith(t, f, clk, noHoldConfig(), component.NewID(metadata.Type))
	again.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-10*time.Second), t0))
	_, reason, _ := attribution(again.records()[0])
	assert.Equal(t, "no_claim_yet", reason, "a new store after every user shut down")
}

// Processors that share a store must agree on every store-level setting:
// creating one that differs fails, naming the store, both processors and
// each setting; settings of one processor may differ.
func TestSharedStoreSettingsMustAgree(t *testing.T) {
	storeLevel := map[string]func(*Config){
		"max_future":              func(c *Config) { c.MaxFuture = 2 * time.Minute },
		"max_wait":                func(c *Config) { c.MaxWait = 10 * time.Second },
		"workload_cidrs":          func(c *Config) { c.WorkloadCIDRs = []string{"10.0.0.0/8"} },
		"workload_host_addresses": func(c *Config) { c.WorkloadHostAddresses = true },
		"static_owners":           func(c *Config) { c.StaticOwners = []owners.Entry{{Prefixes: []string{"203.0.113.0/24"}, ID: "lb"}} },
		"owner_limits":            func(c *Config) { c.OwnerLimits.MaxAttributes = 4 },
		"senders":                 func(c *Config) { c.Senders = map[string][]string{"node-a": {"10.0.1.0/24"}} },
		"merge_gap":               func(c *Config) { c.MergeGap = time.Second },
		"clock_skew":              func(c *Config) { c.ClockSkew = 2 * time.Second },
		"retention":               func(c *Config) { c.Retention = time.Hour },
		"max_keys":                func(c *Config) { c.MaxKeys = 10 },
	}
	require.ElementsMatch(t, storeSettingNames, slices.Collect(maps.Keys(storeLevel)), "every store-level setting is tested")
	base := func() *Config {
		c := createDefaultConfig()
		c.WorkloadCIDRs = []string{"10.0.0.0/8", "192.168.0.0/16"}
		c.StaticOwners = []owners.Entry{{Prefixes: []string{"203.0.113.0/24"}, ID: "lb", Attributes: map[string]string{"service.name": "edge"}}}
		c.Senders = map[string][]string{"node-a": {"10.0.1.0/24"}, "node-b": {"10.0.2.0/24"}}
		return c
	}
	create := func(f processor.Factory, name string, cfg *Config) error {
		tel := componenttest.NewTelemetry()
		t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
		set := metadatatest.NewSettings(tel)
		set.ID = component.NewIDWithName(metadata.Type, name)
		p, err := f.CreateLogs(context.Background(), set, cfg, new(consumertest.LogsSink))
		if err == nil {
			t.Cleanup(func() { require.NoError(t, p.Shutdown(context.Background())) })
		}
		return err
	}
	for setting, change := range storeLevel {
		t.Run(setting, func(t *testing.T) {
			f := NewFactoryWithClock(newTestClock())
			require.NoError(t, create(f, "flows", base()))
			other := base()
			other.Store = "ownership/flows"
			change(other)
			require.NoError(t, other.Validate())
			err := create(f, "peers", other)
			require.Error(t, err)
			assert.Contains(t, err.Error(), `processor ownership/peers shares store "ownership/flows" with processor ownership/flows, but `+setting)
			assert.Equal(t, 2, strings.Count(err.Error(), "ownership/peers"), "only the differing setting is named: %v", err)
		})
	}

	// The same values, written as distinct but equal lists and maps, and
	// an empty list against an absent one, agree.
	f := NewFactoryWithClock(newTestClock())
	first := base()
	first.Senders = nil
	require.NoError(t, create(f, "flows", first))
	same := base()
	same.Store = "ownership/flows"
	same.Senders = map[string][]string{}
	// Settings of each processor, not of the store.
	same.SenderIdentity = senderIdentityCertificate
	same.KeepClaims = true
	same.KeepFlows = false
	same.ApplyLocalClaims = false
	same.MaxPending = 7
	same.KeyAttribute = "server.address"
	same.TimeAttribute = "custom.start"
	same.OwnerPrefix = "peer."
	require.NoError(t, create(f, "peers", same))
}

func TestStoreGauges(t *testing.T) {
	h := newHarness(t, noHoldConfig())
	h.consume(
		claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, ""),
		claim("10.0.0.3", "cart", t0.Add(-10*time.Minute), t0.Add(-9*time.Minute), ""),
		claim("10.0.0.3", "cart", t0.Add(-time.Minute), t0, ""),
	)
	assertCounter(t, h.tel, "otelcol_processor_ownership_keys", nil, 2)
	assertCounter(t, h.tel, "otelcol_processor_ownership_ranges", nil, 3)
	assertCounter(t, h.tel, "otelcol_processor_ownership_claims_applied", nil, 3)
}

func TestPruneRunsOnTicker(t *testing.T) {
	h := newHarness(t, noHoldConfig())
	require.Equal(t, 1, h.clock.callbackCount())
	h.consume(claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, ""))
	assertCounter(t, h.tel, "otelcol_processor_ownership_keys", nil, 1)
	h.clock.Advance(20 * time.Minute) // past retention and a prune tick
	require.Eventually(t, func() bool {
		return metricValue(t, h.tel, "otelcol_processor_ownership_keys", nil) == 0
	}, 5*time.Second, time.Millisecond)
}

// Flows and their claims race through two pipelines: once every
// claim is applied no record may be left waiting (a lost recheck would
// leave it held until max_wait), and none is lost.
func TestConcurrentClaimsReleaseEveryHeldRecord(t *testing.T) {
	clk := newTestClock()
	f := NewFactoryWithClock(clk)
	cfg := createDefaultConfig()
	id := component.NewID(metadata.Type)
	claims := newHarnessWith(t, f, clk, cfg, id)
	flows := newHarnessWith(t, f, clk, cfg, id)

	const keys = 2000
	addr := func(i int) string { return fmt.Sprintf("10.0.%d.%d", i/250, i%250+1) }
	var wg sync.WaitGroup
	wg.Add(2)
	// require may not stop the test from these goroutines: assert only.
	go func() {
		defer wg.Done()
		for i := range keys {
			assert.NoError(t, flows.proc.ConsumeLogs(context.Background(), logsOf(flow("10.9.9.9", addr(i), t0.Add(-30*time.Second), t0))))
		}
	}()
	go func() {
		defer wg.Done()
		for i := range keys {
			assert.NoError(t, claims.proc.ConsumeLogs(context.Background(), logsOf(claim(addr(i), "owner", t0.Add(-time.Minute), t0, ""))))
		}
	}()
	wg.Wait()
	clk.waitSent()

	assertCounter(t, flows.tel, "otelcol_processor_ownership_records_held", nil, 0)
	recs := flows.records()
	require.Len(t, recs, keys)
	for _, lr := range recs {
		status, _, owner := attribution(lr)
		require.Equal(t, "attributed", status)
		require.Equal(t, "owner", owner)
	}
}

// gatedConsumer holds its first ConsumeLogs until open is closed, telling
// entered when it is there.
type gatedConsumer struct {
	consumertest.LogsSink
	once          sync.Once
	entered, open chan struct{}
}

func (c *gatedConsumer) ConsumeLogs(ctx context.Context, ld plog.Logs) error {
	first := false
	c.once.Do(func() { first = true })
	if first {
		close(c.entered)
		<-c.open
	}
	return c.LogsSink.ConsumeLogs(ctx, ld)
}

// A claim in one pipeline releases a record held by another, whose
// Shutdown must then wait until that record has reached its next consumer:
// the collector shuts the next consumer down after it.
func TestShutdownWaitsForReleaseFromOtherPipeline(t *testing.T) {
	clk := newTestClock()
	f := NewFactoryWithClock(clk)
	cfg := createDefaultConfig()
	id := component.NewID(metadata.Type)
	claims := newHarnessWith(t, f, clk, cfg, id)
	gate := &gatedConsumer{entered: make(chan struct{}), open: make(chan struct{})}
	flows := newHarnessTo(t, f, clk, cfg, id, gate, &gate.LogsSink)

	flows.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-30*time.Second), t0))
	go claims.consume(claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, ""))
	<-gate.entered // the release is in the flow pipeline's next consumer

	delivered := make(chan int, 1)
	go func() {
		assert.NoError(t, flows.proc.Shutdown(context.Background()))
		delivered <- gate.LogRecordCount()
	}()
	// Shutdown may not return before the gate opens; give a wrong one the
	// time to do so, then open it.
	select {
	case n := <-delivered:
		t.Fatalf("Shutdown returned with %d records delivered, while the release was still in the next consumer", n)
	case <-time.After(100 * time.Millisecond):
	}
	close(gate.open)
	assert.Equal(t, 1, <-delivered, "the released record reached the next consumer before Shutdown returned")
}

// TestBlockedPipelineDelaysNoOther: two flow pipelines and a claim pipeline
// share a store; the next consumer of one flow pipeline blocks. The other
// flow pipeline's held records must still go on on time, both when their
// max_wait runs out and when a claim in the claim pipeline decides them,
// and neither the clock nor the claim pipeline may wait for the blocked
// consumer.
func TestBlockedPipelineDelaysNoOther(t *testing.T) {
	clk := newTestClock()
	f := NewFactoryWithClock(clk)
	cfg := createDefaultConfig()
	id := component.NewID(metadata.Type)
	blocked := blockingConsumer{entered: make(chan struct{}, 1)}
	stuck := newHarnessTo(t, f, clk, cfg, id, blocked, new(consumertest.LogsSink))
	// Cleanups run last first: this one ends the blocked release before
	// the harness's own Shutdown, which would wait for it.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		assert.NoError(t, stuck.proc.Shutdown(ctx))
	})
	flows := newHarnessWith(t, f, clk, cfg, id)
	claims := newHarnessWith(t, f, clk, cfg, id)
	// Within the bounded waits below the test's own goroutine must not
	// block: Manual.Advance, unlike the test clock's, does not wait for
	// the stuck pipeline's sender.
	within := func(what string, f func()) {
		t.Helper()
		done := make(chan struct{})
		go func() {
			defer close(done)
			f()
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s waits for the blocked next consumer of another pipeline", what)
		}
	}

	// The stuck pipeline holds 10.0.0.2 and 10.0.0.4, the other
	// 10.0.0.3 and 10.0.0.4; 10.0.0.2's max_wait runs out first.
	require.NoError(t, stuck.proc.ConsumeLogs(context.Background(), logsOf(flow("10.0.0.1", "10.0.0.2", t0.Add(-time.Second), t0))))
	clk.Manual.Advance(offTick)
	require.NoError(t, stuck.proc.ConsumeLogs(context.Background(), logsOf(flow("10.0.0.1", "10.0.0.4", t0.Add(-time.Second), t0))))
	require.NoError(t, flows.proc.ConsumeLogs(context.Background(), logsOf(
		flow("10.0.0.1", "10.0.0.3", t0.Add(-time.Second), t0),
		flow("10.0.0.1", "10.0.0.4", t0.Add(-time.Second), t0))))
	within("the clock", func() { clk.Manual.Advance(cfg.MaxWait - offTick) })
	<-blocked.entered // 10.0.0.2 is in the stuck pipeline's next consumer, for good

	within("the claim pipeline", func() {
		assert.NoError(t, claims.proc.ConsumeLogs(context.Background(), logsOf(claim("10.0.0.4", "checkout", t0.Add(-time.Minute), t0.Add(2*time.Second), ""))))
	})
	flows.waitRecords(1)
	assert.Equal(t, []string{"10.0.0.4"}, flows.peers(), "released by the claim at once")

	within("the clock", func() { clk.Manual.Advance(holdCheckInterval(cfg.MaxWait)) })
	flows.waitRecords(2)
	assert.Equal(t, []string{"10.0.0.4", "10.0.0.3"}, flows.peers(), "released when its max_wait ran out")
	assertCounter(t, flows.tel, "otelcol_processor_ownership_records_held", nil, 0)
}
