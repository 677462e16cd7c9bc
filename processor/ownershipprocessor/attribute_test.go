package ownershipprocessor

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadata"
	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadatatest"
)

func TestFlowBeforeClaimWithoutHold(t *testing.T) {
	h := newHarness(t, noHoldConfig())
	h.consume(flow("10.0.0.1", "10.0.0.2", t0.Add(-30*time.Second), t0))
	status, reason, owner := attribution(h.records()[0])
	assert.Equal(t, "unattributed", status)
	assert.Equal(t, "no_claim_yet", reason)
	assert.Equal(t, "<absent>", owner)
}

func TestFlowKeyAndTimeProblems(t *testing.T) {
	h := newHarness(t, noHoldConfig())
	// Covers the fallback time t0 and clock_skew beyond it.
	h.consume(claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0.Add(5*time.Second), ""))
	base := flow("10.0.0.1", "10.0.0.2", t0.Add(-30*time.Second), t0)
	tests := []struct {
		name           string
		record         func(plog.LogRecord)
		status, reason string
	}{
		{"missing key", with(base, func(lr plog.LogRecord) { lr.Attributes().Remove(flowschema.AttrNetworkPeerAddress) }), "unattributed", "missing_key"},
		{"key not a string", with(base, func(lr plog.LogRecord) { lr.Attributes().PutInt(flowschema.AttrNetworkPeerAddress, 10) }), "unattributed", "bad_key"},
		{"key not an address", with(base, func(lr plog.LogRecord) { lr.Attributes().PutStr(flowschema.AttrNetworkPeerAddress, "10.0.0") }), "unattributed", "bad_key"},
		{"time not an int", with(base, func(lr plog.LogRecord) { lr.Attributes().PutStr(flowschema.AttrFlowStartTime, "x") }), "unattributed", "bad_time"},
		{"no time at all", with(base, func(lr plog.LogRecord) {
			lr.Attributes().Remove(flowschema.AttrFlowStartTime)
			lr.SetTimestamp(0)
		}), "unattributed", "missing_time"},
		{"timestamp fallback", with(base, func(lr plog.LogRecord) { lr.Attributes().Remove(flowschema.AttrFlowStartTime) }), "attributed", "timestamp_fallback"},
		{"start past max_future", with(base, func(lr plog.LogRecord) {
			lr.Attributes().PutInt(flowschema.AttrFlowStartTime, t0.Add(time.Minute+1).UnixNano())
		}), "unattributed", "bad_time"},
		{"start at max_future", with(base, func(lr plog.LogRecord) {
			lr.Attributes().PutInt(flowschema.AttrFlowStartTime, t0.Add(time.Minute).UnixNano())
		}), "unattributed", "not_yet_covered"},
		{"timestamp fallback past max_future", with(base, func(lr plog.LogRecord) {
			lr.Attributes().Remove(flowschema.AttrFlowStartTime)
			lr.SetTimestamp(pcommon.NewTimestampFromTime(t0.AddDate(100, 0, 0)))
		}), "unattributed", "bad_time"},
		{"mapped IPv4 peer", with(base, func(lr plog.LogRecord) {
			lr.Attributes().PutStr(flowschema.AttrNetworkPeerAddress, "::ffff:10.0.0.2")
		}), "attributed", "<absent>"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.consume(tt.record)
			recs := h.records()
			require.Len(t, recs, i+1)
			status, reason, _ := attribution(recs[i])
			assert.Equal(t, tt.status, status)
			assert.Equal(t, tt.reason, reason)
		})
	}
}

// A flow that starts past now + max_future is bad input: no claim can
// cover it before max_wait ends, and held it would push records that wait
// for a claim out of the hold.
func TestFutureStartIsNotHeld(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.MaxPending = 2
	h := newHarness(t, cfg)
	future := t0.AddDate(100, 0, 0)
	h.consume(flow("10.0.0.1", "10.0.0.9", t0.Add(-time.Second), t0)) // waits for 10.0.0.9's claim
	h.consume(flow("10.0.0.1", "10.0.0.7", future, t0), flow("10.0.0.1", "10.0.0.8", future, t0))
	recs := h.records()
	require.Len(t, recs, 2, "the two future flows went on at once; the waiting one is still held")
	for _, lr := range recs {
		status, reason, _ := attribution(lr)
		assert.Equal(t, "unattributed", status)
		assert.Equal(t, "bad_time", reason)
	}
	h.consume(claim("10.0.0.9", "db", t0.Add(-time.Minute), t0, ""))
	recs = h.records()
	require.Len(t, recs, 3)
	status, _, owner := attribution(recs[2])
	assert.Equal(t, "attributed", status)
	assert.Equal(t, "db", owner)
}

func TestCustomAttributes(t *testing.T) {
	cfg := noHoldConfig()
	cfg.KeyAttribute = flowschema.AttrServerAddress
	cfg.TimeAttribute = "custom.start"
	cfg.OwnerPrefix = "server.owner."
	h := newHarness(t, cfg)
	h.consume(claim("10.0.0.2", "checkout", t0.Add(-time.Minute), t0, ""))
	h.consume(with(flow("10.0.0.1", "10.0.0.7", t0, t0), func(lr plog.LogRecord) {
		lr.Attributes().PutStr(flowschema.AttrServerAddress, "10.0.0.2")
		lr.Attributes().PutInt("custom.start", t0.Add(-10*time.Second).UnixNano())
	}))
	rec := h.records()[0]
	assert.Equal(t, "checkout", str(rec, "server.owner.id"))
	assert.Equal(t, "attributed", str(rec, flowschema.AttrPeerAttributionStatus))
	assert.Equal(t, "<absent>", str(rec, flowschema.PrefixPeerOwner+"id"))
}

func TestForgedOwnerIsReplaced(t *testing.T) {
	h := newHarness(t, noHoldConfig())
	h.consume(with(flow("10.0.0.1", "10.0.0.2", t0.Add(-30*time.Second), t0), func(lr plog.LogRecord) {
		lr.Attributes().PutStr(flowschema.PrefixPeerOwner+"id", "forged")
		lr.Attributes().PutStr(flowschema.PrefixPeerOwner+"service.name", "forged")
	}))
	rec := h.records()[0]
	status, _, owner := attribution(rec)
	assert.Equal(t, "unattributed", status)
	assert.Equal(t, "<absent>", owner)
	assert.Equal(t, "<absent>", str(rec, flowschema.PrefixPeerOwner+"service.name"))
}

func TestOtherRecordsUntouched(t *testing.T) {
	h := newHarness(t, createDefaultConfig())
	h.consume(func(lr plog.LogRecord) {
		lr.Body().SetStr("hello")
		lr.Attributes().PutStr(flowschema.AttrNetworkPeerAddress, "10.0.0.2")
	})
	recs := h.records()
	require.Len(t, recs, 1)
	assert.Equal(t, "hello", recs[0].Body().Str())
	assert.Equal(t, 1, recs[0].Attributes().Len())
}

func TestWorkloadCIDRsAndStaticOwners(t *testing.T) {
	cfg := createDefaultConfig() // holding on: outside addresses must not wait
	cfg.WorkloadCIDRs = []string{"10.0.0.0/8"}
	cfg.StaticOwners = []owners.Entry{
		{Prefixes: []string{"203.0.113.0/24"}, ID: "edge-lb", Attributes: map[string]string{"service.name": "edge"}},
		{Prefixes: []string{"203.0.113.128/25"}, ID: "edge-lb-v2"},
	}
	h := newHarness(t, cfg)
	h.consume(
		flow("10.0.0.1", "203.0.113.7", t0.Add(-time.Second), t0),
		flow("10.0.0.1", "203.0.113.200", t0.Add(-time.Second), t0),
		flow("10.0.0.1", "198.51.100.1", t0.Add(-time.Second), t0),
	)
	recs := h.records()
	require.Len(t, recs, 3, "records outside workload_cidrs are never held")

	status, reason, owner := attribution(recs[0])
	assert.Equal(t, []string{"attributed", "static", "edge-lb"}, []string{status, reason, owner})
	assert.Equal(t, "edge", str(recs[0], flowschema.PrefixPeerOwner+"service.name"))

	_, _, owner = attribution(recs[1])
	assert.Equal(t, "edge-lb-v2", owner, "longest prefix wins")

	status, reason, owner = attribution(recs[2])
	assert.Equal(t, []string{"external", "outside_workload_cidrs", "<absent>"}, []string{status, reason, owner})
}

// hostAddrs is a settable list of the host's own addresses.
type hostAddrs struct {
	mu    sync.Mutex
	addrs []netip.Addr
	err   error
}

func (h *hostAddrs) set(addrs []netip.Addr, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.addrs, h.err = addrs, err
}

func (h *hostAddrs) list() ([]netip.Addr, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.addrs, h.err
}

// With workload_host_addresses the host's own addresses are workload
// addresses beside workload_cidrs, as the host's address list changes: a
// flow to one waits for its claim, and its claims are accepted; a flow to
// any other address outside workload_cidrs goes on at once, external.
func TestWorkloadHostAddresses(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.WorkloadCIDRs = []string{"10.0.0.0/8"}
	cfg.WorkloadHostAddresses = true
	host := &hostAddrs{addrs: []netip.Addr{mustAddr("192.0.2.2")}}
	clk := newTestClock()
	h := newHarnessWith(t, newFactory(clk, host.list), clk, cfg, component.NewID(metadata.Type))

	h.consume(
		flow("10.0.0.1", "192.0.2.2", t0.Add(-time.Second), t0),
		flow("10.0.0.1", "198.51.100.1", t0.Add(-time.Second), t0),
	)
	recs := h.records()
	require.Len(t, recs, 1, "the flow to the host's address waits for a claim")
	status, reason, owner := attribution(recs[0])
	assert.Equal(t, []string{"198.51.100.1", "external", "outside_workload_cidrs", "<absent>"},
		[]string{str(recs[0], flowschema.AttrNetworkPeerAddress), status, reason, owner})

	h.consume(claim("192.0.2.2", "node-a", t0.Add(-time.Minute), t0, "node-a"))
	recs = h.records()
	require.Len(t, recs, 2, "the host's claim releases its flow")
	status, _, owner = attribution(recs[1])
	assert.Equal(t, []string{"attributed", "node-a"}, []string{status, owner})

	// The host's address moves; a failed listing keeps the last list.
	host.set([]netip.Addr{mustAddr("192.0.2.3")}, nil)
	h.clock.Advance(hostAddrsRefresh)
	host.set(nil, errors.New("netlink: no answer"))
	h.clock.Advance(hostAddrsRefresh)
	h.consume(
		flow("10.0.0.1", "192.0.2.3", t0, t0.Add(time.Second)),
		flow("10.0.0.1", "192.0.2.2", t0, t0.Add(time.Second)),
	)
	recs = h.records()
	require.Len(t, recs, 3, "the flow to the new address waits")
	status, _, _ = attribution(recs[2])
	assert.Equal(t, []string{"192.0.2.2", "external"}, []string{str(recs[2], flowschema.AttrNetworkPeerAddress), status})
}

// Without workload_cidrs, workload_host_addresses makes the host's own
// addresses the only workload addresses, and static owners may name the
// rest.
func TestWorkloadHostAddressesOnly(t *testing.T) {
	cfg := noHoldConfig()
	cfg.WorkloadHostAddresses = true
	cfg.StaticOwners = []owners.Entry{{Prefixes: []string{"203.0.113.0/24"}, ID: "edge-lb"}}
	require.NoError(t, cfg.Validate())
	host := &hostAddrs{addrs: []netip.Addr{mustAddr("192.0.2.2")}}
	clk := newTestClock()
	h := newHarnessWith(t, newFactory(clk, host.list), clk, cfg, component.NewID(metadata.Type))
	h.consume(
		flow("10.0.0.1", "192.0.2.2", t0.Add(-time.Second), t0),
		flow("10.0.0.1", "10.0.0.2", t0.Add(-time.Second), t0),
		flow("10.0.0.1", "203.0.113.9", t0.Add(-time.Second), t0),
	)
	var got []string
	for _, r := range h.records() {
		status, reason, owner := attribution(r)
		got = append(got, status+"/"+reason+"/"+owner)
	}
	assert.Equal(t, []string{"unattributed/no_claim_yet/<absent>", "external/outside_workload_cidrs/<absent>", "attributed/static/edge-lb"}, got)
}

// A collector that cannot list the host's addresses does not start.
func TestWorkloadHostAddressesListFails(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.WorkloadHostAddresses = true
	clk := newTestClock()
	f := newFactory(clk, func() ([]netip.Addr, error) { return nil, errors.New("netlink: no answer") })
	set := metadatatest.NewSettings(componenttest.NewTelemetry())
	_, err := f.CreateLogs(context.Background(), set, cfg, new(consumertest.LogsSink))
	require.ErrorContains(t, err, "workload_host_addresses: listing the host's addresses: netlink: no answer")
}
