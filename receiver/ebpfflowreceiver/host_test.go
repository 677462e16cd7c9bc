package ebpfflowreceiver

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"

	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/metadatatest"
)

func TestStaticSourceDefaultIsHostIdentity(t *testing.T) {
	idFile := filepath.Join(t.TempDir(), "machine-id")
	require.NoError(t, os.WriteFile(idFile, []byte("0123456789abcdef\n"), 0o600))
	host, err := readHostIdentity(idFile)
	require.NoError(t, err)
	name, _ := os.Hostname()
	assert.Equal(t, hostIdentity{name: name, id: "0123456789abcdef"}, host)

	r, err := newFlowReceiver(metadatatest.NewSettings(componenttest.NewTelemetry()), createDefaultConfig(), consumertest.NewNop(),
		testEnvironment(nil, newManualClock(at(0)), idFile, "192.0.2.10", "2001:db8::10"))
	require.NoError(t, err)
	r.host = host
	sources, err := r.buildSources()
	require.NoError(t, err)
	require.Len(t, sources, 1)
	want := owners.Owner{ID: name, Attributes: []owners.Attribute{{Name: "host.id", Value: "0123456789abcdef"}, {Name: "host.name", Value: name}}}
	assert.Equal(t, map[netip.Prefix]owners.Owner{
		netip.MustParsePrefix("192.0.2.10/32"):    want,
		netip.MustParsePrefix("2001:db8::10/128"): want,
	}, sources[0].Entries())
}

func TestReceiverStartNamesAFailedHostAddressListing(t *testing.T) {
	env := testEnvironment(newFakeTracer(), newManualClock(at(0)), machineIDFile(t))
	env.hostAddrs = func() ([]netip.Addr, error) { return nil, errors.New("netlink: no") }
	r, err := newFlowReceiver(metadatatest.NewSettings(componenttest.NewTelemetry()), createDefaultConfig(), consumertest.NewNop(), env)
	require.NoError(t, err)
	assert.ErrorContains(t, r.Start(context.Background(), componenttest.NewNopHost()), "ownership.static.host_addresses")
	require.NoError(t, r.Shutdown(context.Background()))
}
