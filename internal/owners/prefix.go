package owners

import (
	"fmt"
	"net/netip"
)

// ParsePrefix parses an IP address, as the prefix holding only it, or a CIDR
// prefix, into canonical form: an IPv4-mapped IPv6 address or prefix becomes
// its IPv4 form, so that one host never appears under two keys. It rejects
// zoned addresses and prefixes with host bits set (most likely a typo for
// another range); its errors quote s and say what was expected.
func ParsePrefix(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q: zoned addresses are not supported", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an IP address nor a CIDR prefix (want e.g. 10.0.0.7, 10.0.0.0/8 or fd00::/8)", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %s?", s, m)
	}
	// A masked prefix with an IPv4-mapped address lies within ::ffff:0:0/96.
	if a := p.Addr(); a.Is4In6() {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96), nil
	}
	return p, nil
}
