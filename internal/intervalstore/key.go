package intervalstore

import "net/netip"

// Key128 is a 16-byte key: an IP address (see AddrKey) or any other
// identifier that fits. A slot holds it in 16 bytes with no pointer, where
// a netip.Addr key takes 24 bytes including its zone's pointer: a store of
// Key128 keys is a quarter smaller.
type Key128 [16]byte

// AddrKey returns the key of a, which must have no zone: its 16-byte form,
// in which an IPv4 address is IPv4-mapped. Unmap IPv4-mapped IPv6
// addresses first if both forms may occur, so that one host is one key.
func AddrKey(a netip.Addr) Key128 { return a.As16() }

// Addr returns the address whose key is k: an IPv4 address for an
// IPv4-mapped k, else an IPv6 one.
func (k Key128) Addr() netip.Addr { return netip.AddrFrom16(k).Unmap() }
