package flowmetricsconnector // import "github.com/flowattr/flowattr/connector/flowmetricsconnector"

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/collector/confmap"
)

// Config configures the flow metrics connector.
type Config struct {
	// Interval is how often the series aggregated since the last emission
	// are emitted, as deltas.
	Interval time.Duration `mapstructure:"interval"`
	// MaxSeries bounds the series aggregated in one interval; a record of
	// a new series beyond it is dropped and counted.
	MaxSeries int `mapstructure:"max_series"`
	// OwnerAttribute names the owner attribute that tells workloads apart:
	// "id" keys the series on flowattr.local.owner.id and
	// flowattr.peer.owner.id; "service.name" on
	// flowattr.local.owner.service.name and so on.
	OwnerAttribute string `mapstructure:"owner_attribute"`

	// prevent unkeyed literal initialization
	_ struct{}
}

var _ confmap.Validator = (*Config)(nil)

func createDefaultConfig() *Config {
	return &Config{
		Interval:       10 * time.Second,
		MaxSeries:      10_000,
		OwnerAttribute: "id",
	}
}

// Validate checks the configuration and says what to change.
func (cfg *Config) Validate() error {
	var errs []error
	if cfg.Interval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("interval must be at least 100ms, got %s: every interval emits a data point per series", cfg.Interval))
	}
	if cfg.MaxSeries <= 0 {
		errs = append(errs, fmt.Errorf("max_series must be positive, got %d", cfg.MaxSeries))
	}
	if cfg.OwnerAttribute == "" || strings.TrimSpace(cfg.OwnerAttribute) != cfg.OwnerAttribute {
		errs = append(errs, fmt.Errorf("owner_attribute must name an owner attribute without surrounding spaces, e.g. id or service.name, got %q", cfg.OwnerAttribute))
	}
	return errors.Join(errs...)
}
