package localowner // import "github.com/flowattr/flowattr/internal/localowner"

import (
	"net"
	"net/netip"

	"github.com/flowattr/flowattr/internal/flowschema"
)

// HostUnicastAddrs returns the host's addresses that can identify it to
// peers, canonical (IPv4-mapped unmapped, no zone): not loopback,
// link-local, multicast or unspecified, as every host has those and
// claiming them would collide with every other host's claims.
func HostUnicastAddrs() ([]netip.Addr, error) {
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, ia := range ifAddrs {
		ipNet, ok := ia.(*net.IPNet)
		if !ok {
			continue
		}
		a, ok := netip.AddrFromSlice(ipNet.IP)
		if !ok {
			continue
		}
		a = flowschema.CanonicalAddr(a)
		if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified() {
			continue
		}
		out = append(out, a)
	}
	return out, nil
}
