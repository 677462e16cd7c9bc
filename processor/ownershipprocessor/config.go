package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/collector/confmap"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
)

// Config configures the ownership processor. Every pipeline that lists the
// same processor ID shares one store built from this configuration.
type Config struct {
	// KeyAttribute names the flow record attribute holding the address to
	// attribute.
	KeyAttribute string `mapstructure:"key_attribute"`
	// TimeAttribute names the flow record attribute holding the lookup time
	// (int Unix nanoseconds). When it is absent the record Timestamp is used.
	TimeAttribute string `mapstructure:"time_attribute"`
	// OwnerPrefix is the attribute prefix under which the owner is written.
	OwnerPrefix string `mapstructure:"owner_prefix"`
	// KeepClaims passes claim records on after applying them instead of
	// removing them from the stream.
	KeepClaims bool `mapstructure:"keep_claims"`
	// KeepFlows passes flow records on (attributed). When false they are
	// removed after their local claims are applied: with KeepClaims, a
	// pipeline that forwards only claim records, e.g. to peers or a topic.
	KeepFlows bool `mapstructure:"keep_flows"`
	// ApplyLocalClaims applies the local side of every flow record (local
	// address held by the local owner from flow start to record time) as a
	// claim.
	ApplyLocalClaims bool `mapstructure:"apply_local_claims"`
	// MaxFuture is how far past the processor's clock a claim may end.
	MaxFuture time.Duration `mapstructure:"max_future"`
	// MaxWait is how long a flow record whose peer is not covered yet is held
	// waiting for a claim. Zero disables holding.
	MaxWait time.Duration `mapstructure:"max_wait"`
	// MaxPending bounds the number of held flow records per pipeline, and
	// apart from them the released records waiting to be sent again. The
	// default is sized for 100k flows/s with 10s claim intervals: records
	// wait up to a claim interval plus delivery delay and clock_skew.
	MaxPending int `mapstructure:"max_pending"`
	// WorkloadCIDRs are the ranges (CIDR prefixes or single addresses) whose
	// addresses are claimed. Empty means every address.
	WorkloadCIDRs []string `mapstructure:"workload_cidrs"`
	// StaticOwners name owners for addresses outside WorkloadCIDRs.
	StaticOwners []owners.Entry `mapstructure:"static_owners"`
	// OwnerLimits bound the owners of claims and static_owners: a claim
	// whose owner is beyond them is rejected (owner_too_large), as every
	// flow attributed to that owner would carry its attributes.
	OwnerLimits owners.Limits `mapstructure:"owner_limits"`
	// Senders, when set, lists who may send claims (the claim's sender
	// attribute) and which addresses (CIDR prefixes or single addresses)
	// each may claim.
	Senders map[string][]string `mapstructure:"senders"`
	// SenderIdentity binds a claim's sender name to the connection it came
	// over. "none" trusts the declared sender; "certificate" requires a claim
	// that arrived over gRPC to come with a verified client certificate whose
	// CommonName or a DNS SAN is the sender. It needs the processor directly
	// after an OTLP/gRPC receiver with mutual TLS, so that the connection is
	// in the context; claims with no gRPC peer (local receivers, Kafka) are
	// not checked.
	SenderIdentity string `mapstructure:"sender_identity"`
	// MergeGap, ClockSkew, Retention and MaxKeys configure the store.
	MergeGap  time.Duration `mapstructure:"merge_gap"`
	ClockSkew time.Duration `mapstructure:"clock_skew"`
	Retention time.Duration `mapstructure:"retention"`
	MaxKeys   int           `mapstructure:"max_keys"`

	// prevent unkeyed literal initialization
	_ struct{}
}

var _ confmap.Validator = (*Config)(nil)

func createDefaultConfig() *Config {
	return &Config{
		KeyAttribute:     flowschema.AttrNetworkPeerAddress,
		TimeAttribute:    flowschema.AttrFlowStartTime,
		OwnerPrefix:      flowschema.PrefixPeerOwner,
		KeepFlows:        true,
		ApplyLocalClaims: true,
		SenderIdentity:   senderIdentityNone,
		MaxFuture:        time.Minute,
		MaxWait:          30 * time.Second,
		MaxPending:       1_200_000,
		MergeGap:         30 * time.Second,
		ClockSkew:        time.Second,
		Retention:        15 * time.Minute,
		MaxKeys:          1_000_000,
		OwnerLimits:      owners.DefaultLimits(),
	}
}

// Validate checks the configuration and says what to change.
func (cfg *Config) Validate() error {
	var errs []error
	if cfg.KeyAttribute == "" {
		errs = append(errs, errors.New("key_attribute must not be empty: name the attribute holding the peer address, e.g. "+flowschema.AttrNetworkPeerAddress))
	}
	if cfg.TimeAttribute == "" {
		errs = append(errs, errors.New("time_attribute must not be empty: name the attribute holding the flow start time, e.g. "+flowschema.AttrFlowStartTime))
	}
	if cfg.OwnerPrefix == "" {
		errs = append(errs, fmt.Errorf("owner_prefix must not be empty, e.g. %q", flowschema.PrefixPeerOwner))
	} else {
		// Every attribute under owner_prefix is removed from a flow record
		// before the peer owner is written.
		var replaced []string
		for _, kept := range append([]string{cfg.KeyAttribute, cfg.TimeAttribute, flowschema.PrefixLocalOwner, flowschema.AttrPeerAttributionStatus, flowschema.AttrPeerAttributionReason}, flowschema.FlowAttributes()...) {
			if strings.HasPrefix(kept, cfg.OwnerPrefix) && !slices.Contains(replaced, strconv.Quote(kept)) {
				replaced = append(replaced, strconv.Quote(kept))
			}
		}
		if len(replaced) > 0 {
			errs = append(errs, fmt.Errorf("owner_prefix %q would replace %s: every attribute under owner_prefix is removed from flow records before the peer owner is written; choose a prefix used only for the peer owner, e.g. %s", cfg.OwnerPrefix, strings.Join(replaced, ", "), flowschema.PrefixPeerOwner))
		}
		if strings.HasPrefix(cfg.OwnerPrefix, flowschema.PrefixLocalOwner) && cfg.OwnerPrefix != flowschema.PrefixLocalOwner {
			errs = append(errs, fmt.Errorf("owner_prefix %q lies inside %s: the peer owner written there would be read as attributes of the flow's local owner; choose a prefix outside it, e.g. %s", cfg.OwnerPrefix, flowschema.PrefixLocalOwner, flowschema.PrefixPeerOwner))
		}
	}
	if cfg.KeyAttribute != "" && cfg.KeyAttribute == cfg.TimeAttribute {
		errs = append(errs, fmt.Errorf("key_attribute and time_attribute must differ, both are %q: one holds the peer address (a string), the other the flow start time (an int)", cfg.KeyAttribute))
	}
	if cfg.SenderIdentity != senderIdentityNone && cfg.SenderIdentity != senderIdentityCertificate {
		errs = append(errs, fmt.Errorf("sender_identity must be %q or %q, got %q", senderIdentityNone, senderIdentityCertificate, cfg.SenderIdentity))
	}
	if cfg.MaxFuture < 0 {
		errs = append(errs, fmt.Errorf("max_future must not be negative, got %s", cfg.MaxFuture))
	}
	if cfg.MaxWait < 0 {
		errs = append(errs, fmt.Errorf("max_wait must not be negative, got %s (use 0 to disable holding)", cfg.MaxWait))
	}
	if cfg.MaxWait > 0 && cfg.MaxPending <= 0 {
		errs = append(errs, fmt.Errorf("max_pending must be positive when max_wait is set, got %d (set max_wait: 0 to disable holding)", cfg.MaxPending))
	}
	if cfg.MergeGap < 0 {
		errs = append(errs, fmt.Errorf("merge_gap must not be negative, got %s", cfg.MergeGap))
	}
	if cfg.ClockSkew < 0 {
		errs = append(errs, fmt.Errorf("clock_skew must not be negative, got %s", cfg.ClockSkew))
	}
	if cfg.Retention <= 0 {
		errs = append(errs, fmt.Errorf("retention must be positive, got %s", cfg.Retention))
	} else if cfg.Retention <= cfg.MaxWait {
		errs = append(errs, fmt.Errorf("retention (%s) must be longer than max_wait (%s): a held record must still be within retention when its claim arrives", cfg.Retention, cfg.MaxWait))
	}
	if cfg.MaxKeys <= 0 {
		errs = append(errs, fmt.Errorf("max_keys must be positive, got %d", cfg.MaxKeys))
	}
	if err := cfg.OwnerLimits.Validate("owner_limits"); err != nil {
		errs = append(errs, err)
	}
	if _, err := cfg.tables(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
