package flowmapexporter // import "github.com/flowattr/flowattr/exporter/flowmapexporter"

import (
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/collector/config/confighttp"
	"go.opentelemetry.io/collector/confmap"

	"github.com/flowattr/flowattr/internal/owners"
)

// defaultEndpoint is on loopback: the map shows who talks to whom, which
// is not for everyone who can reach the host.
const defaultEndpoint = "localhost:8990"

// Limits of the settings: a window moves in steps of window/numSlots, and
// every edge keeps numSlots slots of counts (about 3 KiB).
const (
	minWindow   = 10 * time.Second
	maxWindow   = 24 * time.Hour
	maxMaxNodes = 100_000
	maxMaxEdges = 100_000
	minRefresh  = 100 * time.Millisecond
)

// Config configures the flowmap exporter.
type Config struct {
	// ServerConfig is where the page and the JSON are served (endpoint,
	// tls, auth, ...).
	ServerConfig confighttp.ServerConfig `mapstructure:",squash"`
	// Window is how far back the map reaches; it moves in steps of a tenth
	// of it.
	Window time.Duration `mapstructure:"window"`
	// NodeAttribute is the owner attribute that names a workload node;
	// owners without it are named by their ID ("id" names every owner by
	// its ID).
	NodeAttribute string `mapstructure:"node_attribute"`
	// GroupBy is the owner attribute whose value groups workload nodes, and
	// is part of a node's identity (the same name in two groups is two
	// nodes); empty for no grouping. The page can regroup by any other
	// attribute the nodes carry.
	GroupBy string `mapstructure:"group_by"`
	// MaxNodes bounds the workload nodes; flows of further workloads go
	// to the other bucket.
	MaxNodes int `mapstructure:"max_nodes"`
	// MaxEdges bounds the edges; flows of further edges go to the other
	// bucket's own edge.
	MaxEdges int `mapstructure:"max_edges"`
	// Refresh is how often the page fetches the map again.
	Refresh time.Duration `mapstructure:"refresh"`
	// OwnerLimits bound the owners the map keeps as nodes; a flow whose
	// owner beyond them would make a node is rejected and counted.
	OwnerLimits owners.Limits `mapstructure:"owner_limits"`

	// prevent unkeyed literal initialization
	_ struct{}
}

var _ confmap.Validator = (*Config)(nil)

func createDefaultConfig() *Config {
	server := confighttp.NewDefaultServerConfig()
	server.NetAddr.Endpoint = defaultEndpoint
	return &Config{
		ServerConfig:  server,
		Window:        5 * time.Minute,
		NodeAttribute: "service.name",
		GroupBy:       "k8s.namespace.name",
		MaxNodes:      500,
		MaxEdges:      2000,
		Refresh:       2 * time.Second,
		OwnerLimits:   owners.DefaultLimits(),
	}
}

// Validate checks the configuration and says what to change.
func (cfg *Config) Validate() error {
	var errs []error
	if cfg.ServerConfig.NetAddr.Endpoint == "" {
		errs = append(errs, fmt.Errorf("endpoint must not be empty: give the address to serve the map on, e.g. %s", defaultEndpoint))
	}
	if cfg.Window < minWindow || cfg.Window > maxWindow {
		errs = append(errs, fmt.Errorf("window must be between %s and %s, got %s", minWindow, maxWindow, cfg.Window))
	}
	if cfg.NodeAttribute == "" {
		errs = append(errs, errors.New(`node_attribute must not be empty: name the owner attribute that names a workload, e.g. service.name, or "id" for the owner ID`))
	}
	if cfg.GroupBy != "" && cfg.GroupBy == cfg.NodeAttribute {
		errs = append(errs, fmt.Errorf("group_by and node_attribute are both %q: group by another attribute (e.g. k8s.namespace.name) or set group_by to \"\"", cfg.GroupBy))
	}
	if cfg.MaxNodes <= 0 || cfg.MaxNodes > maxMaxNodes {
		errs = append(errs, fmt.Errorf("max_nodes must be between 1 and %d, got %d", maxMaxNodes, cfg.MaxNodes))
	}
	if cfg.MaxEdges <= 0 || cfg.MaxEdges > maxMaxEdges {
		errs = append(errs, fmt.Errorf("max_edges must be between 1 and %d, got %d (each edge keeps about 3 KiB)", maxMaxEdges, cfg.MaxEdges))
	}
	if cfg.Refresh < minRefresh {
		errs = append(errs, fmt.Errorf("refresh must be at least %s, got %s", minRefresh, cfg.Refresh))
	}
	if err := cfg.OwnerLimits.Validate("owner_limits"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
