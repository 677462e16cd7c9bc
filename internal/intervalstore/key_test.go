package intervalstore

import (
	"net/netip"
	"testing"
)

func TestAddrKeyRoundTrip(t *testing.T) {
	seen := map[Key128]netip.Addr{}
	for _, s := range []string{"10.0.0.1", "0.0.0.0", "255.255.255.255", "::", "::1", "fd00::10:0:0:1", "2001:db8::ffff:a00:1", "::a00:1"} {
		a := netip.MustParseAddr(s)
		k := AddrKey(a)
		if got := k.Addr(); got != a {
			t.Errorf("AddrKey(%v).Addr() = %v", a, got)
		}
		if prev, dup := seen[k]; dup {
			t.Errorf("%v and %v have the same key", prev, a)
		}
		seen[k] = a
	}
}
