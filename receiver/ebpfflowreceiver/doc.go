//go:generate go tool -modfile=../../tools/go.mod mdatagen metadata.yaml

// Package ebpfflowreceiver turns every TCP connection on the host into a flow
// log record, using the eBPF tracer in internal/tracer, and emits claim
// records for this host's addresses, which internal/localowner makes from
// the ownership sources and the flows. The records follow
// internal/flowschema.
package ebpfflowreceiver // import "github.com/flowattr/flowattr/receiver/ebpfflowreceiver"
