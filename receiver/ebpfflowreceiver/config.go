package ebpfflowreceiver // import "github.com/flowattr/flowattr/receiver/ebpfflowreceiver"

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"

	"go.opentelemetry.io/collector/confmap"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/metadata"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/tracer"
)

// Names of the ownership sources, as used in OwnershipConfig.Precedence.
const (
	sourceFile   = "file"
	sourceStatic = "static"
)

// Config is the ebpfflow receiver's configuration.
type Config struct {
	// RingBufferSize is the kernel ring buffer size in bytes: 0 for the
	// tracer's default (4 MiB), else a power of two and a multiple of the page
	// size. A larger ring absorbs longer bursts before the kernel drops
	// events.
	RingBufferSize int `mapstructure:"ring_buffer_size"`
	// MaxConnections bounds the connections the kernel tracks at once; 0 for
	// the tracer's default (65536). Connections born while it is full yield
	// no record and are counted.
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

	// ClaimInterval is how often heartbeat (claim) records are emitted.
	ClaimInterval time.Duration `mapstructure:"claim_interval"`
	// ActiveInterval is how often open connections are reported with interim
	// (state active) records; 0 disables interim reports.
	ActiveInterval time.Duration `mapstructure:"active_interval"`
	// Sender names this receiver in its claims (flowattr.claim.sender);
	// empty for the host name.
	Sender string `mapstructure:"sender"`

	Filter    FilterConfig    `mapstructure:"filter"`
	Ownership OwnershipConfig `mapstructure:"ownership"`

	ResourceAttributes metadata.ResourceAttributesConfig `mapstructure:"resource_attributes"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// FilterConfig selects the flows that become records. Heartbeats are not
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
}

// StaticSourceConfig is the static ownership source.
type StaticSourceConfig struct {
	// HostAddresses maps each of the host's own global and private unicast
	// addresses (not loopback, not link-local) to the host's identity, whose
	// owner ID is the host name.
	HostAddresses bool `mapstructure:"host_addresses"`
	// Entries map addresses or prefixes to owners.
	Entries []StaticEntry `mapstructure:"entries"`
}

// StaticEntry maps addresses or prefixes to one owner.
type StaticEntry struct {
	// Prefixes are IP addresses or CIDR prefixes.
	Prefixes []string `mapstructure:"prefixes"`
	// Owner is the owner's stable ID.
	Owner string `mapstructure:"owner"`
	// Attributes describe the owner, for example service.name; they are
	// written as flowattr.local.owner.<name> on flow records.
	Attributes map[string]string `mapstructure:"attributes"`
}

// FileSourceConfig is the file ownership source.
type FileSourceConfig struct {
	// Path of a YAML or JSON map from IP address or CIDR prefix to owner.
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
			Precedence: []string{sourceFile, sourceStatic},
			Static:     StaticSourceConfig{HostAddresses: true},
			File:       FileSourceConfig{PollInterval: 5 * time.Second},
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
	return errors.Join(errs...)
}

func (f *FilterConfig) validate() []error {
	var errs []error
	for _, s := range f.ExcludeCIDRs {
		if _, err := parsePrefix(s); err != nil {
			errs = append(errs, fmt.Errorf("filter.exclude_cidrs: %w", err))
		}
	}
	for _, s := range f.IncludeCIDRs {
		if _, err := parsePrefix(s); err != nil {
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
	seen := map[string]bool{}
	for _, name := range o.Precedence {
		switch {
		case name != sourceFile && name != sourceStatic:
			errs = append(errs, fmt.Errorf("ownership.precedence: unknown source %q; known sources are %q and %q", name, sourceFile, sourceStatic))
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
	// A prefix given twice would silently go to the last entry.
	first := map[netip.Prefix]int{}
	for i, e := range o.Static.Entries {
		ps, err := e.prefixes()
		if err != nil {
			errs = append(errs, fmt.Errorf("ownership.static.entries[%d]: %w", i, err))
			continue
		}
		for _, p := range ps {
			if j, dup := first[p]; dup {
				errs = append(errs, fmt.Errorf("ownership.static.entries[%d]: %s is already in entries[%d]; give each address or prefix one owner", i, p, j))
				continue
			}
			first[p] = i
		}
	}
	return errs
}

// parsedEntries maps every prefix of the entries to its owner, canonical.
func (s *StaticSourceConfig) parsedEntries() (map[netip.Prefix]owners.Owner, error) {
	out := map[netip.Prefix]owners.Owner{}
	for _, e := range s.Entries {
		prefixes, err := e.prefixes()
		if err != nil {
			return nil, err
		}
		o := owners.Owner{ID: e.Owner}
		for name, value := range e.Attributes {
			o.Attributes = append(o.Attributes, owners.Attribute{Name: name, Value: value})
		}
		o = o.Canonical()
		for _, p := range prefixes {
			out[p] = o
		}
	}
	return out, nil
}

// prefixes parses the entry's prefixes and checks its owner.
func (e *StaticEntry) prefixes() ([]netip.Prefix, error) {
	if e.Owner == "" {
		return nil, errors.New("owner: must not be empty")
	}
	for name := range e.Attributes {
		if err := checkOwnerAttributeName(name); err != nil {
			return nil, fmt.Errorf("attributes: %w", err)
		}
	}
	if len(e.Prefixes) == 0 {
		return nil, errors.New("prefixes: must list at least one address or CIDR prefix")
	}
	out := make([]netip.Prefix, 0, len(e.Prefixes))
	for _, s := range e.Prefixes {
		p, err := parsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("prefixes: %w", err)
		}
		out = append(out, p)
	}
	return out, nil
}

// checkOwnerAttributeName rejects names that cannot be written under an owner
// prefix: empty, or colliding with the owner ID attribute.
func checkOwnerAttributeName(name string) error {
	if name == "" {
		return errors.New("attribute name must not be empty")
	}
	if name == flowschema.OwnerIDSuffix {
		return fmt.Errorf("attribute name %q is reserved for the owner ID", name)
	}
	return nil
}

// parsePrefix parses an IP address (as a single-address prefix) or a CIDR
// prefix into canonical form: IPv4-mapped IPv6 unmapped. A prefix with host
// bits set is rejected, as it is most likely a typo.
func parsePrefix(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q: zoned addresses are not supported", s)
		}
		a = flowschema.CanonicalAddr(a)
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an IP address nor a CIDR prefix", s)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %s?", s, p.Masked())
	}
	// A masked prefix with an IPv4-mapped address keeps all of ::ffff:0:0/96.
	if a := p.Addr(); a.Is4In6() {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96), nil
	}
	return p, nil
}

// sourceOrder returns the enabled sources' names, highest precedence first.
func (o *OwnershipConfig) sourceOrder() []string {
	return slices.DeleteFunc(slices.Clone(o.Precedence), func(name string) bool {
		return name == sourceFile && o.File.Path == ""
	})
}
