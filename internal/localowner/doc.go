// Package localowner is what a host knows about the owners of its own
// addresses, and the claims it makes from that knowledge. It merges
// ownership sources (Source: static configuration, the host's addresses, a
// polled file) into one longest-prefix map (Ownership), tells whether a
// flow's local owner held its address for the whole flow (Entry), and turns
// the addresses seen in flows and the addresses the sources name into one
// claim per address and owner per interval (Claimer).
//
// It does not touch the kernel and imports no collector component: its
// inputs are plain values (addresses, flow starts on the wall clock and on
// the kernel's boot clock, flow ends) and injected clocks, so a simulated
// host can drive it as the ebpfflow receiver does: New, Start, then Lookup,
// Observe and CloseInterval. Only Start starts goroutines (the sources'
// pollers); telemetry stays with the caller, which passes callbacks.
package localowner // import "github.com/flowattr/flowattr/internal/localowner"
