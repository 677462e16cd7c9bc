package flowschema

import "go.opentelemetry.io/collector/pdata/pcommon"

// Port reads a port attribute (network.*.port, server.port, client.port):
// 0, no port, unless v is an integer in [1, 65535]. Readers that key on
// ports must not tell other values apart: each would be a port of its own
// that is written as no port.
func Port(v pcommon.Value) uint16 {
	if v.Type() != pcommon.ValueTypeInt || v.Int() < 1 || v.Int() > 65535 {
		return 0
	}
	return uint16(v.Int())
}

// Count reads a counter attribute (flowattr.flow.bytes_*, segments_*,
// retransmits, srtt_us): ok is false unless v is a non-negative integer,
// which a sum of counts can take; a reader counts what it rejects.
func Count(v pcommon.Value) (n int64, ok bool) {
	if v.Type() != pcommon.ValueTypeInt || v.Int() < 0 {
		return 0, false
	}
	return v.Int(), true
}
