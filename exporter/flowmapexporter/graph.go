package flowmapexporter // import "github.com/flowattr/flowattr/exporter/flowmapexporter"

import "time"

// Graph is the map over the window, as /api/graph serves it.
type Graph struct {
	Start         time.Time `json:"start"`
	End           time.Time `json:"end"`
	WindowSeconds float64   `json:"window_seconds"`
	// RefreshSeconds is how often the page fetches the map again.
	RefreshSeconds float64 `json:"refresh_seconds"`
	NodeAttribute  string  `json:"node_attribute"`
	GroupBy        string  `json:"group_by"`
	MaxNodes       int     `json:"max_nodes"`
	MaxEdges       int     `json:"max_edges"`
	Nodes          []Node  `json:"nodes"`
	Edges          []Edge  `json:"edges"`
}

// Figures are the counts of a node or an edge over the window. Flows are
// closed or failed connections; a node's include those of every edge it
// is an end of, a connection from a workload to itself once.
type Figures struct {
	Flows       uint64 `json:"flows"`
	Failed      uint64 `json:"failed"`
	Retransmits uint64 `json:"retransmits"`
	RTT         RTT    `json:"rtt_us"`
	// Ports are the server ports with their flows, most flows first; a
	// node's are those it accepted on.
	Ports          []PortFlows `json:"ports"`
	OtherPortFlows uint64      `json:"other_port_flows"`
}

// RTT holds smoothed round-trip time percentiles in microseconds, each the
// upper bound of its half-octave histogram bucket.
type RTT struct {
	P50     uint64 `json:"p50"`
	P90     uint64 `json:"p90"`
	P99     uint64 `json:"p99"`
	Samples uint64 `json:"samples"`
}

// PortFlows counts the flows to one server port.
type PortFlows struct {
	Port  uint16 `json:"port"`
	Flows uint64 `json:"flows"`
}

// Node is a workload or a bucket.
type Node struct {
	ID string `json:"id"`
	// Kind is workload, external, unattributed, conflict, uncertain,
	// no_owner or other.
	Kind string `json:"kind"`
	// Name and Group are a workload's node_attribute and group_by values.
	Name       string            `json:"name,omitempty"`
	Group      string            `json:"group,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
	Figures
	BytesSent     uint64 `json:"bytes_sent"`
	BytesReceived uint64 `json:"bytes_received"`
	// UnattributedFlows are the flows whose other end is the unattributed,
	// conflict or uncertain bucket, ExternalFlows those whose other end is
	// the external bucket; the shares are of Flows.
	UnattributedFlows uint64  `json:"unattributed_flows"`
	ExternalFlows     uint64  `json:"external_flows"`
	UnattributedShare float64 `json:"unattributed_share"`
	ExternalShare     float64 `json:"external_share"`
}

// Edge is the traffic from one client node to one server node.
type Edge struct {
	ID     string `json:"id"`
	Source string `json:"source"` // the client node
	Target string `json:"target"` // the server node
	Figures
	BytesToServer uint64 `json:"bytes_to_server"`
	BytesToClient uint64 `json:"bytes_to_client"`
}
