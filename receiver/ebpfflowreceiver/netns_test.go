package ebpfflowreceiver

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/metadatatest"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/tracer"
)

// TestReceiverOwnNetnsOnly checks that with filter.own_netns_only the
// receiver reports, and claims the local addresses of, only the sockets of
// its own network namespace.
func TestReceiverOwnNetnsOnly(t *testing.T) {
	const own, other = 4026532101, 4026532202
	flow := func(local string, netns uint32) tracer.Event {
		return tracer.Event{
			Kind: tracer.KindClosed, Role: tracer.RoleClient,
			LocalAddr: netip.MustParseAddr(local), LocalPort: 40000,
			PeerAddr: netip.MustParseAddr("10.0.9.9"), PeerPort: 443,
			Start: at(1), StartKnown: true, End: at(2), NetnsInode: netns,
		}
	}
	ft := newFakeTracer(flow("10.0.0.1", own), flow("10.0.0.2", other))
	cfg := createDefaultConfig()
	cfg.Filter.OwnNetnsOnly = true
	cfg.ClaimInterval = time.Hour
	cfg.ActiveInterval = 0
	cfg.Ownership.Static.HostAddresses = false
	cfg.Ownership.Static.Entries = []owners.Entry{{Prefixes: []string{"10.0.0.0/24"}, ID: "tenant"}}
	clock := newManualClock(at(0))
	env := testEnvironment(ft, clock, machineIDFile(t))
	env.netnsInode = func() (uint32, error) { return own, nil }
	sink := new(consumertest.LogsSink)
	tel := componenttest.NewTelemetry()
	r, err := newFlowReceiver(metadatatest.NewSettings(tel), cfg, sink, env)
	require.NoError(t, err)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	<-ft.delivered
	clock.Set(at(3))
	require.NoError(t, r.Shutdown(context.Background()))

	flows, claimRecords := split(records(sink))
	require.Len(t, flows, 1)
	local, _ := flows[0].Attributes().Get(flowschema.AttrNetworkLocalAddress)
	assert.Equal(t, "10.0.0.1", local.Str())
	require.Len(t, claimRecords, 1, "only the address seen in the own namespace is claimed")
	c, err := flowschema.ParseClaim(claimRecords[0])
	require.NoError(t, err)
	assert.Equal(t, netip.MustParseAddr("10.0.0.1"), c.Address)

	// The other namespace's socket is counted as filtered.
	metadatatest.AssertEqualEbpfflowFlowsFiltered(t, tel, []metricdata.DataPoint[int64]{{Value: 1}}, metricdatatest.IgnoreTimestamp())
}

func TestReceiverOwnNetnsUnknown(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.Filter.OwnNetnsOnly = true
	env := testEnvironment(newFakeTracer(), newManualClock(at(0)), machineIDFile(t))
	env.netnsInode = func() (uint32, error) { return 0, errors.New("no /proc") }
	_, err := newFlowReceiver(metadatatest.NewSettings(componenttest.NewTelemetry()), cfg, consumertest.NewNop(), env)
	require.ErrorContains(t, err, "own_netns_only")
}

func TestOwnNetnsInode(t *testing.T) {
	ino, err := ownNetnsInode()
	require.NoError(t, err)
	assert.NotZero(t, ino)
}
