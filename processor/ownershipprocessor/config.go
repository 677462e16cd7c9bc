package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/collector/confmap"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
)

// Config configures the ownership processor. Every processor that names
// the same store (Store, by default its own ID) shares one store, so every
// pipeline that lists the same processor ID does; the store-level settings
// (storeSettingNames) must then be the same in each.
type Config struct {
	// Store names the store this processor uses; empty means its own
	// component ID. Processors with different sender_identity share one
	// store this way, each checking the claims of its own pipelines.
	Store string `mapstructure:"store"`
	// KeyAttribute names the flow record attribute holding the address to
	// attribute.
	KeyAttribute string `mapstructure:"key_attribute"`
	// TimeAttribute names the flow record attribute holding the lookup time
	// (int Unix nanoseconds). When it is absent the record Timestamp is used.
	TimeAttribute string `mapstructure:"time_attribute"`
	// OwnerPrefix is the attribute prefix under which the owner is written.
	OwnerPrefix string `mapstructure:"owner_prefix"`
	// TranslatedKeyAttribute names the flow record attribute holding the
	// translated peer: the backend that address translation sent a
	// connection to a service address to.
	TranslatedKeyAttribute string `mapstructure:"translated_key_attribute"`
	// TranslatedOwnerPrefix is the attribute prefix under which the
	// translated peer's owner is written; empty to not attribute it.
	TranslatedOwnerPrefix string `mapstructure:"translated_owner_prefix"`
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
	// addresses are claimed. Empty, without WorkloadHostAddresses, means
	// every address.
	WorkloadCIDRs []string `mapstructure:"workload_cidrs"`
	// WorkloadHostAddresses adds the host's own unicast addresses, listed
	// at start and every hostAddrsRefresh, to WorkloadCIDRs: where the
	// ebpfflow receiver's host_addresses claims them.
	WorkloadHostAddresses bool `mapstructure:"workload_host_addresses"`
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
	// over. "none" trusts the declared sender: for the pipelines whose
	// receivers are trusted by design (this collector's ebpfflow, a Kafka
	// topic checked where claims enter it). "certificate" accepts a claim,
	// or a flow's local side, only from a gRPC connection whose verified
	// client certificate's CommonName or a DNS SAN is the sender; every
	// other claim, whatever its transport (OTLP/HTTP, a local receiver,
	// Kafka), is rejected as unauthenticated_sender. It needs the processor
	// directly after an OTLP/gRPC receiver with mutual TLS, so that the
	// connection is in the context.
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
		KeyAttribute:           flowschema.AttrNetworkPeerAddress,
		TimeAttribute:          flowschema.AttrFlowStartTime,
		OwnerPrefix:            flowschema.PrefixPeerOwner,
		TranslatedKeyAttribute: flowschema.AttrPeerTranslatedAddress,
		TranslatedOwnerPrefix:  flowschema.PrefixPeerTranslatedOwner,
		KeepFlows:              true,
		ApplyLocalClaims:       true,
		SenderIdentity:         senderIdentityNone,
		MaxFuture:              time.Minute,
		MaxWait:                30 * time.Second,
		MaxPending:             1_200_000,
		MergeGap:               30 * time.Second,
		ClockSkew:              time.Second,
		Retention:              15 * time.Minute,
		MaxKeys:                1_000_000,
		OwnerLimits:            owners.DefaultLimits(),
	}
}

// checkPrefix checks an owner prefix, the setting name, against what it
// would replace: every attribute under it is removed from flow records
// before an owner is written there.
func (cfg *Config) checkPrefix(name, prefix, example string) []error {
	var errs []error
	var replaced []string
	kept := []string{
		cfg.KeyAttribute, cfg.TimeAttribute, flowschema.PrefixLocalOwner, flowschema.PrefixLocalWorkload,
		flowschema.AttrPeerAttributionStatus, flowschema.AttrPeerAttributionReason,
		cfg.TranslatedKeyAttribute, flowschema.AttrPeerTranslatedAttributionStatus, flowschema.AttrPeerTranslatedAttributionReason,
	}
	for _, k := range append(kept, flowschema.FlowAttributes()...) {
		if k != "" && strings.HasPrefix(k, prefix) && !slices.Contains(replaced, strconv.Quote(k)) {
			replaced = append(replaced, strconv.Quote(k))
		}
	}
	if len(replaced) > 0 {
		errs = append(errs, fmt.Errorf("%s %q would replace %s: every attribute under %s is removed from flow records before the owner is written; choose a prefix used only for that owner, e.g. %s", name, prefix, strings.Join(replaced, ", "), name, example))
	}
	for _, local := range []struct{ prefix, what string }{
		{flowschema.PrefixLocalOwner, "the flow's local owner"},
		{flowschema.PrefixLocalWorkload, "the flow's local workload"},
	} {
		if strings.HasPrefix(prefix, local.prefix) && prefix != local.prefix {
			errs = append(errs, fmt.Errorf("%s %q lies inside %s: the owner written there would be read as attributes of %s; choose a prefix outside it, e.g. %s", name, prefix, local.prefix, local.what, example))
		}
	}
	return errs
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
		errs = append(errs, cfg.checkPrefix("owner_prefix", cfg.OwnerPrefix, flowschema.PrefixPeerOwner)...)
	}
	if cfg.TranslatedOwnerPrefix != "" {
		if cfg.TranslatedKeyAttribute == "" {
			errs = append(errs, fmt.Errorf("translated_key_attribute must not be empty while translated_owner_prefix is set: name the attribute holding the translated peer, e.g. %s, or set translated_owner_prefix to \"\" to not attribute it", flowschema.AttrPeerTranslatedAddress))
		}
		errs = append(errs, cfg.checkPrefix("translated_owner_prefix", cfg.TranslatedOwnerPrefix, flowschema.PrefixPeerTranslatedOwner)...)
		if cfg.OwnerPrefix != "" && (strings.HasPrefix(cfg.OwnerPrefix, cfg.TranslatedOwnerPrefix) || strings.HasPrefix(cfg.TranslatedOwnerPrefix, cfg.OwnerPrefix)) {
			errs = append(errs, fmt.Errorf("owner_prefix %q and translated_owner_prefix %q overlap: the peer's and the translated peer's owners would replace each other; choose prefixes apart, e.g. %s and %s",
				cfg.OwnerPrefix, cfg.TranslatedOwnerPrefix, flowschema.PrefixPeerOwner, flowschema.PrefixPeerTranslatedOwner))
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

// storeSettingNames are the settings of a store rather than of one of the
// processors that use it: what the store accepts (max_future, owner_limits,
// senders, workload_cidrs, workload_host_addresses), how it keeps ranges
// and answers lookups (merge_gap, clock_skew, retention, max_keys,
// static_owners), and max_wait, since the store's clock checks the held
// records of every pipeline using it. Processors that share a store must
// set each alike.
var storeSettingNames = []string{
	"max_future", "max_wait", "workload_cidrs", "workload_host_addresses", "static_owners", "owner_limits",
	"senders", "merge_gap", "clock_skew", "retention", "max_keys",
}

// storeSettingDiffs describes each store-level setting that a and b set
// differently, with both values where they are short, in the order of
// storeSettingNames. An empty list and an absent one are alike.
func storeSettingDiffs(a, b *Config, aName, bName string) []string {
	var diffs []string
	diff := func(name string, same bool, va, vb any) {
		if !same {
			diffs = append(diffs, fmt.Sprintf("%s is %v in %s and %v in %s", name, va, aName, vb, bName))
		}
	}
	differ := func(name string, same bool) {
		if !same {
			diffs = append(diffs, fmt.Sprintf("%s differ between %s and %s", name, aName, bName))
		}
	}
	diff("max_future", a.MaxFuture == b.MaxFuture, a.MaxFuture, b.MaxFuture)
	diff("max_wait", a.MaxWait == b.MaxWait, a.MaxWait, b.MaxWait)
	diff("workload_cidrs", slices.Equal(a.WorkloadCIDRs, b.WorkloadCIDRs), a.WorkloadCIDRs, b.WorkloadCIDRs)
	diff("workload_host_addresses", a.WorkloadHostAddresses == b.WorkloadHostAddresses, a.WorkloadHostAddresses, b.WorkloadHostAddresses)
	differ("static_owners", slices.EqualFunc(a.StaticOwners, b.StaticOwners, sameEntry))
	la, lb := a.OwnerLimits, b.OwnerLimits
	diff("owner_limits.max_id_length", la.MaxIDLength == lb.MaxIDLength, la.MaxIDLength, lb.MaxIDLength)
	diff("owner_limits.max_attributes", la.MaxAttributes == lb.MaxAttributes, la.MaxAttributes, lb.MaxAttributes)
	diff("owner_limits.max_name_length", la.MaxNameLength == lb.MaxNameLength, la.MaxNameLength, lb.MaxNameLength)
	diff("owner_limits.max_value_length", la.MaxValueLength == lb.MaxValueLength, la.MaxValueLength, lb.MaxValueLength)
	differ("senders", maps.EqualFunc(a.Senders, b.Senders, slices.Equal[[]string]))
	diff("merge_gap", a.MergeGap == b.MergeGap, a.MergeGap, b.MergeGap)
	diff("clock_skew", a.ClockSkew == b.ClockSkew, a.ClockSkew, b.ClockSkew)
	diff("retention", a.Retention == b.Retention, a.Retention, b.Retention)
	diff("max_keys", a.MaxKeys == b.MaxKeys, a.MaxKeys, b.MaxKeys)
	return diffs
}

func sameEntry(a, b owners.Entry) bool {
	return a.ID == b.ID && slices.Equal(a.Prefixes, b.Prefixes) && maps.Equal(a.Attributes, b.Attributes)
}
