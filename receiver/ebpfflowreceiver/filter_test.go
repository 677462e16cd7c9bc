package ebpfflowreceiver

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/tracer"
)

func flowEvent(role tracer.Role, local string, localPort uint16, peer string, peerPort uint16) *tracer.Event {
	return &tracer.Event{
		Kind: tracer.KindClosed, Role: role,
		LocalAddr: netip.MustParseAddr(local), LocalPort: localPort,
		PeerAddr: netip.MustParseAddr(peer), PeerPort: peerPort,
	}
}

func TestFilterDefaultExcludesLoopbackOnly(t *testing.T) {
	f, err := newFlowFilter(createDefaultConfig().Filter, 0)
	require.NoError(t, err)
	assert.False(t, f.keep(flowEvent(tracer.RoleClient, "127.0.0.1", 40000, "127.0.0.1", 80)))
	assert.False(t, f.keep(flowEvent(tracer.RoleClient, "::1", 40000, "::1", 80)))
	assert.False(t, f.keep(flowEvent(tracer.RoleServer, "127.0.0.53", 53, "127.0.0.1", 40000)))
	assert.True(t, f.keep(flowEvent(tracer.RoleClient, "10.0.0.1", 40000, "10.0.0.2", 22)))

	f, err = newFlowFilter(FilterConfig{}, 0)
	require.NoError(t, err)
	assert.True(t, f.keep(flowEvent(tracer.RoleClient, "127.0.0.1", 40000, "127.0.0.1", 80)), "exclude_loopback: false keeps loopback")
}

func TestFilterRules(t *testing.T) {
	f, err := newFlowFilter(FilterConfig{
		ExcludeCIDRs: []string{"169.254.169.254", "10.99.0.0/16"},
		IncludeCIDRs: []string{"10.0.0.0/8", "2001:db8::/32"},
		ExcludePorts: []int{9100},
	}, 0)
	require.NoError(t, err)
	tests := []struct {
		name string
		ev   *tracer.Event
		keep bool
	}{
		{"included local", flowEvent(tracer.RoleClient, "10.0.0.1", 40000, "192.0.2.1", 443), true},
		{"included peer", flowEvent(tracer.RoleClient, "192.0.2.1", 40000, "10.0.0.1", 443), true},
		{"included v6", flowEvent(tracer.RoleServer, "2001:db8::1", 443, "2001:db9::1", 40000), true},
		{"not included", flowEvent(tracer.RoleClient, "192.0.2.1", 40000, "198.51.100.1", 443), false},
		{"excluded peer single address", flowEvent(tracer.RoleClient, "10.0.0.1", 40000, "169.254.169.254", 80), false},
		{"exclusion wins over inclusion", flowEvent(tracer.RoleServer, "10.99.1.1", 443, "10.0.0.1", 40000), false},
		{"client to excluded server port", flowEvent(tracer.RoleClient, "10.0.0.1", 40000, "10.0.0.2", 9100), false},
		{"server on excluded port", flowEvent(tracer.RoleServer, "10.0.0.1", 9100, "10.0.0.2", 40000), false},
		{"client whose ephemeral port is 9100", flowEvent(tracer.RoleClient, "10.0.0.1", 9100, "10.0.0.2", 443), true},
		{"server whose peer's ephemeral port is 9100", flowEvent(tracer.RoleServer, "10.0.0.1", 443, "10.0.0.2", 9100), true},
		{"unknown role matches either port", flowEvent(tracer.RoleUnknown, "10.0.0.1", 443, "10.0.0.2", 9100), false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.keep, f.keep(tt.ev), tt.name)
	}
}

func TestFilterOwnNetnsOnly(t *testing.T) {
	ev := func(netns uint32) *tracer.Event {
		e := flowEvent(tracer.RoleClient, "10.0.0.1", 40000, "10.0.0.2", 443)
		e.NetnsInode = netns
		return e
	}
	f, err := newFlowFilter(FilterConfig{OwnNetnsOnly: true}, 4026532000)
	require.NoError(t, err)
	assert.True(t, f.keep(ev(4026532000)), "a socket of the collector's namespace is kept")
	assert.False(t, f.keep(ev(4026531840)), "a socket of another namespace is dropped")
	assert.False(t, f.keep(ev(0)), "a socket whose namespace is unknown is dropped")

	f, err = newFlowFilter(FilterConfig{}, 4026532000)
	require.NoError(t, err)
	assert.True(t, f.keep(ev(4026531840)), "every namespace is kept by default")

	_, err = newFlowFilter(FilterConfig{OwnNetnsOnly: true}, 0)
	require.ErrorContains(t, err, "own_netns_only")
}
