//go:generate go tool -modfile=../../tools/go.mod mdatagen metadata.yaml

// Package flowmetricsconnector turns flow records into workload-to-workload
// metrics: it reads each final flow record's attributes once, adds it to the
// series of its local workload, peer workload, server port, role and
// attribution status, and every interval emits the interval's sums and
// histograms as deltas.
package flowmetricsconnector // import "github.com/flowattr/flowattr/connector/flowmetricsconnector"
