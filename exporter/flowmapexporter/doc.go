//go:generate go tool -modfile=../../tools/go.mod mdatagen metadata.yaml

// Package flowmapexporter keeps a sliding-window aggregate of attributed
// flow records, workloads as nodes and client-to-server pairs as edges, and
// serves it on a local address as a live map (a web page with the graph
// library embedded) and as JSON.
package flowmapexporter // import "github.com/flowattr/flowattr/exporter/flowmapexporter"
