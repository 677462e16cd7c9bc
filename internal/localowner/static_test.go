package localowner

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/flowattr/flowattr/internal/owners"
)

func listAddrs(addrs ...string) func() ([]netip.Addr, error) {
	return func() ([]netip.Addr, error) {
		out := make([]netip.Addr, len(addrs))
		for i, s := range addrs {
			out[i] = netip.MustParseAddr(s)
		}
		return out, nil
	}
}

func ownerIDs(m map[netip.Prefix]owners.Owner) map[string]string {
	out := map[string]string{}
	for p, o := range m {
		out[p.String()] = o.ID
	}
	return out
}

func TestStaticSourceHostAddresses(t *testing.T) {
	host := owners.Owner{ID: "h", Attributes: []owners.Attribute{{Name: "host.id", Value: "0123456789abcdef"}, {Name: "host.name", Value: "h"}}}
	src, err := NewStaticSource(nil, &HostAddresses{Owner: host, List: listAddrs("192.0.2.10", "2001:db8::10"), RefreshEvery: time.Hour}, zap.NewNop())
	require.NoError(t, err)
	assert.Equal(t, map[netip.Prefix]owners.Owner{
		netip.MustParsePrefix("192.0.2.10/32"):    host,
		netip.MustParsePrefix("2001:db8::10/128"): host,
	}, src.Entries())

	src, err = NewStaticSource(nil, nil, zap.NewNop())
	require.NoError(t, err)
	assert.Empty(t, src.Entries(), "without the host's addresses")
}

func TestStaticSourceEntriesWinOverHostAddresses(t *testing.T) {
	configured, err := owners.ParseEntries("entries", []owners.Entry{{
		Prefixes: []string{"192.0.2.10", "10.0.0.0/24"}, ID: "svc", Attributes: map[string]string{"service.name": "svc", "a": "1"},
	}}, owners.DefaultLimits())
	require.NoError(t, err)
	src, err := NewStaticSource(configured, &HostAddresses{Owner: owners.Owner{ID: "h"}, List: listAddrs("192.0.2.10", "192.0.2.11"), RefreshEvery: time.Hour}, zap.NewNop())
	require.NoError(t, err)
	svc := owners.Owner{ID: "svc", Attributes: []owners.Attribute{{Name: "a", Value: "1"}, {Name: "service.name", Value: "svc"}}}
	assert.Equal(t, svc, src.Entries()[netip.MustParsePrefix("192.0.2.10/32")])
	assert.Equal(t, svc, src.Entries()[netip.MustParsePrefix("10.0.0.0/24")])
	assert.Equal(t, "h", src.Entries()[netip.MustParsePrefix("192.0.2.11/32")].ID)
}

func TestStaticSourceFollowsHostAddresses(t *testing.T) {
	current := []string{"192.0.2.10", "192.0.2.11"}
	var mu sync.Mutex
	list := func() ([]netip.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		if current == nil {
			return nil, errors.New("netlink: no")
		}
		return listAddrs(current...)()
	}
	host := &HostAddresses{Owner: owners.Owner{ID: "h"}, List: list, RefreshEvery: time.Hour}
	src, err := NewStaticSource(nil, host, zap.NewNop())
	require.NoError(t, err)
	assert.False(t, src.refreshHostAddrs(), "same addresses, no change")

	mu.Lock()
	current = []string{"192.0.2.11", "192.0.2.12"}
	mu.Unlock()
	assert.True(t, src.refreshHostAddrs())
	assert.Equal(t, map[string]string{"192.0.2.11/32": "h", "192.0.2.12/32": "h"}, ownerIDs(src.Entries()), "a lost address is no longer the host's")

	mu.Lock()
	current = nil
	mu.Unlock()
	assert.False(t, src.refreshHostAddrs(), "a failed listing keeps the previous addresses")
	assert.Len(t, src.Entries(), 2)

	_, err = NewStaticSource(nil, host, zap.NewNop())
	assert.ErrorContains(t, err, "listing the host's addresses: netlink: no")
}
