package ebpfflowreceiver // import "github.com/flowattr/flowattr/receiver/ebpfflowreceiver"

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"go.opentelemetry.io/collector/confmap"

	"github.com/flowattr/flowattr/internal/localowner/kube"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/metadata"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/tracer"
)

// Names of the ownership sources, as used in OwnershipConfig.Precedence.
const (
	sourceFile       = "file"
	sourceKubernetes = "kubernetes"
	sourceStatic     = "static"
)

// Config is the ebpfflow receiver's configuration.
type Config struct {
	// RingBufferSize is the kernel ring buffer size in bytes: 0 for the
	// tracer's default (4 MiB), else a power of two and a multiple of the page
	// size. A larger ring absorbs longer bursts before the kernel drops
	// events.
	RingBufferSize int `mapstructure:"ring_buffer_size"`
	// MaxConnections bounds the connections the kernel tracks at once; 0 for
	// the tracer's default (65536). Connections born while it is full are
	// counted, and reported at close only, without their start, role and
	// process.
	MaxConnections int `mapstructure:"max_connections"`

	// QueueSize bounds the events waiting between the ring reader and the
	// pipeline. When it is full, new events are dropped and counted rather
	// than stalling the ring reader.
	QueueSize int `mapstructure:"queue_size"`
	// MaxBatchSize is the most records in one plog.Logs handed to the
	// pipeline.
	MaxBatchSize int `mapstructure:"max_batch_size"`
	// FlushInterval is the longest a record waits for its batch to fill.
	FlushInterval time.Duration `mapstructure:"flush_interval"`

	// ClaimInterval is how often claim records are emitted.
	ClaimInterval time.Duration `mapstructure:"claim_interval"`
	// ActiveInterval is how often open connections are reported with interim
	// (state active) records; 0 disables interim reports.
	ActiveInterval time.Duration `mapstructure:"active_interval"`
	// Sender names this receiver in its claims (flowattr.claim.sender);
	// empty for the host name.
	Sender string `mapstructure:"sender"`

	Filter    FilterConfig    `mapstructure:"filter"`
	Ownership OwnershipConfig `mapstructure:"ownership"`
	// NAT reads the translated peer of client flows to service addresses.
	NAT NATConfig `mapstructure:"nat"`

	ResourceAttributes metadata.ResourceAttributesConfig `mapstructure:"resource_attributes"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// FilterConfig selects the flows that become records. Claim records are not
// filtered.
type FilterConfig struct {
	// ExcludeLoopback drops flows whose local or peer address is a loopback
	// address (127.0.0.0/8, ::1).
	ExcludeLoopback bool `mapstructure:"exclude_loopback"`
	// ExcludeCIDRs drops flows whose local or peer address is in one of
	// these prefixes (single addresses allowed).
	ExcludeCIDRs []string `mapstructure:"exclude_cidrs"`
	// IncludeCIDRs, when not empty, keeps only flows whose local or peer
	// address is in one of these prefixes. Exclusions apply first.
	IncludeCIDRs []string `mapstructure:"include_cidrs"`
	// ExcludePorts drops flows whose server port (the port that accepted the
	// connection, whichever side this host is) is one of these. Flows whose
	// role is unknown are matched on either port.
	ExcludePorts []int `mapstructure:"exclude_ports"`
	// OwnNetnsOnly keeps only sockets of the network namespace the collector
	// runs in. The tracepoint is kernel-wide, so by default a collector sees
	// every namespace's sockets; a collector per namespace (one per
	// container host sharing a kernel, or a test host) must not report, or
	// claim addresses from, the others'.
	OwnNetnsOnly bool `mapstructure:"own_netns_only"`
}

// OwnershipConfig configures where local addresses' owners come from.
type OwnershipConfig struct {
	// Precedence orders the sources for prefixes that more than one source
	// names; the first wins. A more specific prefix always wins over a less
	// specific one, whatever its source. It must list every enabled source.
	Precedence []string `mapstructure:"precedence"`
	// Static is a fixed map configured here.
	Static StaticSourceConfig `mapstructure:"static"`
	// File is a map that another program (an IPAM agent, an orchestrator)
	// writes; disabled when Path is empty.
	File FileSourceConfig `mapstructure:"file"`
	// Kubernetes makes the node's pods the owners of their addresses, and
	// Services of their cluster IPs, from the API server; disabled unless
	// Enabled.
	Kubernetes kube.Config `mapstructure:"kubernetes"`
	// OwnerLimits bound the owners that every source may name: a static
	// entry beyond them is a configuration error, a file with one does not
	// load. The processors that read this receiver's records should allow
	// at least as much.
	OwnerLimits owners.Limits `mapstructure:"owner_limits"`
}

// StaticSourceConfig is the static ownership source.
type StaticSourceConfig struct {
	// HostAddresses maps each of the host's own global and private unicast
	// addresses (not loopback, not link-local) to the host's identity, whose
	// owner ID is the host name.
	HostAddresses bool `mapstructure:"host_addresses"`
	// Entries map addresses or prefixes to owners; each prefix belongs to
	// one entry.
	Entries []owners.Entry `mapstructure:"entries"`
}

// FileSourceConfig is the file ownership source.
type FileSourceConfig struct {
	// Path of a YAML or JSON list of entries (prefixes, id, attributes), the
	// shape of StaticSourceConfig.Entries.
	Path string `mapstructure:"path"`
	// PollInterval is how often the file is checked for changes.
	PollInterval time.Duration `mapstructure:"poll_interval"`
}

var _ confmap.Validator = (*Config)(nil)

func createDefaultConfig() *Config {
	return &Config{
		QueueSize:      10000,
		MaxBatchSize:   1000,
		FlushInterval:  time.Second,
		ClaimInterval:  10 * time.Second,
		ActiveInterval: 30 * time.Second,
		Filter:         FilterConfig{ExcludeLoopback: true},
		Ownership: OwnershipConfig{
			Precedence:  []string{sourceKubernetes, sourceFile, sourceStatic},
			Static:      StaticSourceConfig{HostAddresses: true},
			File:        FileSourceConfig{PollInterval: 5 * time.Second},
			OwnerLimits: owners.DefaultLimits(),
		},
		ResourceAttributes: metadata.DefaultResourceAttributesConfig(),
	}
}

// Validate checks the configuration; each error names the setting at fault.
func (cfg *Config) Validate() error {
	var errs []error
	if cfg.RingBufferSize != 0 {
		page := os.Getpagesize()
		if cfg.RingBufferSize < page || cfg.RingBufferSize&(cfg.RingBufferSize-1) != 0 || cfg.RingBufferSize > tracer.MaxRingBufferSize {
			errs = append(errs, fmt.Errorf("ring_buffer_size: %d is not a power of two between the page size (%d) and %d bytes; use 0 for the default (%d)",
				cfg.RingBufferSize, page, tracer.MaxRingBufferSize, tracer.DefaultRingBufferSize))
		}
	}
	if cfg.MaxConnections < 0 || cfg.MaxConnections > tracer.MaxMaxConnections {
		errs = append(errs, fmt.Errorf("max_connections: %d is outside [0, %d]; use 0 for the default (%d)",
			cfg.MaxConnections, tracer.MaxMaxConnections, tracer.DefaultMaxConnections))
	}
	if cfg.QueueSize <= 0 {
		errs = append(errs, fmt.Errorf("queue_size: must be positive, got %d", cfg.QueueSize))
	}
	if cfg.MaxBatchSize <= 0 {
		errs = append(errs, fmt.Errorf("max_batch_size: must be positive, got %d", cfg.MaxBatchSize))
	}
	if cfg.FlushInterval <= 0 {
		errs = append(errs, fmt.Errorf("flush_interval: must be positive, got %s", cfg.FlushInterval))
	}
	if cfg.ClaimInterval < time.Second {
		errs = append(errs, fmt.Errorf("claim_interval: must be at least 1s, got %s", cfg.ClaimInterval))
	}
	if cfg.ActiveInterval < 0 || (cfg.ActiveInterval > 0 && cfg.ActiveInterval < time.Second) {
		errs = append(errs, fmt.Errorf("active_interval: must be 0 (disabled) or at least 1s, got %s", cfg.ActiveInterval))
	}
	errs = append(errs, cfg.Filter.validate()...)
	errs = append(errs, cfg.Ownership.validate()...)
	errs = append(errs, cfg.NAT.validate()...)
	return errors.Join(errs...)
}

func (f *FilterConfig) validate() []error {
	var errs []error
	for _, s := range f.ExcludeCIDRs {
		if _, err := owners.ParsePrefix(s); err != nil {
			errs = append(errs, fmt.Errorf("filter.exclude_cidrs: %w", err))
		}
	}
	for _, s := range f.IncludeCIDRs {
		if _, err := owners.ParsePrefix(s); err != nil {
			errs = append(errs, fmt.Errorf("filter.include_cidrs: %w", err))
		}
	}
	for _, p := range f.ExcludePorts {
		if p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("filter.exclude_ports: %d is not a port in [1, 65535]", p))
		}
	}
	return errs
}

func (o *OwnershipConfig) validate() []error {
	var errs []error
	enabled := []string{sourceStatic}
	if o.File.Path != "" {
		enabled = append(enabled, sourceFile)
		if o.File.PollInterval < 100*time.Millisecond {
			errs = append(errs, fmt.Errorf("ownership.file.poll_interval: must be at least 100ms, got %s", o.File.PollInterval))
		}
	}
	if o.Kubernetes.Enabled {
		enabled = append(enabled, sourceKubernetes)
		if err := o.Kubernetes.Validate("ownership.kubernetes", o.OwnerLimits); err != nil {
			errs = append(errs, err)
		}
	}
	seen := map[string]bool{}
	for _, name := range o.Precedence {
		switch {
		case name != sourceFile && name != sourceStatic && name != sourceKubernetes:
			errs = append(errs, fmt.Errorf("ownership.precedence: unknown source %q; known sources are %q, %q and %q", name, sourceKubernetes, sourceFile, sourceStatic))
		case seen[name]:
			errs = append(errs, fmt.Errorf("ownership.precedence: source %q listed twice", name))
		}
		seen[name] = true
	}
	for _, name := range enabled {
		if !seen[name] {
			errs = append(errs, fmt.Errorf("ownership.precedence: enabled source %q is missing; list every enabled source, first wins", name))
		}
	}
	if err := o.OwnerLimits.Validate("ownership.owner_limits"); err != nil {
		errs = append(errs, err)
	}
	if _, err := owners.ParseEntries("ownership.static.entries", o.Static.Entries, o.OwnerLimits); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// sourceOrder returns the enabled sources' names, highest precedence first.
func (o *OwnershipConfig) sourceOrder() []string {
	return slices.DeleteFunc(slices.Clone(o.Precedence), func(name string) bool {
		return (name == sourceFile && o.File.Path == "") || (name == sourceKubernetes && !o.Kubernetes.Enabled)
	})
}
