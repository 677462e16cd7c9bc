package ownershipprocessor

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/processor/ownershipprocessor/internal/metadata"
)

func loadConfig(t *testing.T, name string) (*Config, error) {
	t.Helper()
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	require.NoError(t, err)
	cfg := createDefaultConfig()
	sub, err := cm.Sub(component.NewIDWithName(metadata.Type, name).String())
	require.NoError(t, err)
	require.NoError(t, sub.Unmarshal(cfg))
	return cfg, confmap.Validate(cfg)
}

func TestLoadConfig(t *testing.T) {
	cfg, err := loadConfig(t, "")
	require.NoError(t, err)
	assert.Equal(t, createDefaultConfig(), cfg)

	cfg, err = loadConfig(t, "custom")
	require.NoError(t, err)
	assert.Equal(t, &Config{
		Store:         "ownership",
		KeyAttribute:  "server.address",
		TimeAttribute: "custom.start",
		OwnerPrefix:   "peer.",
		// The default: the custom configuration names only the prefix.
		TranslatedKeyAttribute: flowschema.AttrPeerTranslatedAddress,
		TranslatedOwnerPrefix:  "backend.",
		KeepClaims:             true,
		ApplyLocalClaims:       false,
		MaxFuture:              2 * time.Minute,
		MaxWait:                10 * time.Second,
		MaxPending:             500,
		WorkloadCIDRs:          []string{"10.0.0.0/8", "fd00::/8"},
		StaticOwners: []owners.Entry{{
			Prefixes:   []string{"203.0.113.0/24", "198.51.100.7"},
			ID:         "lb-public",
			Attributes: map[string]string{"service.name": "edge"},
		}},
		Senders: map[string][]string{
			"node-a": {"10.1.0.0/16"},
			"node-b": {"10.2.0.0/16", "fd00:2::/32", "10.3.0.7"},
		},
		SenderIdentity: "certificate",
		MergeGap:       10 * time.Second,
		ClockSkew:      500 * time.Millisecond,
		Retention:      5 * time.Minute,
		MaxKeys:        1000,
		OwnerLimits:    owners.Limits{MaxIDLength: 256, MaxAttributes: 8, MaxNameLength: 256, MaxValueLength: 256},
	}, cfg)
}

func TestValidateErrors(t *testing.T) {
	tests := []struct {
		name string
		want []string
	}{
		{"bad_cidr", []string{`workload_cidrs[0]: "10.0.0/8" is neither an IP address nor a CIDR prefix`}},
		{"host_bits", []string{`workload_cidrs[0]: "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?`}},
		{"zoned", []string{`workload_cidrs[0]: "fe80::1%eth0": zoned addresses are not supported`}},
		{"static_without_workload", []string{"static_owners: static owners name addresses outside workload_cidrs, but workload_cidrs is empty"}},
		{"static_overlap", []string{"static_owners: 10.1.0.0/16 (owner lb) overlaps workload_cidrs"}},
		{"static_no_id", []string{"static_owners[0].id: must not be empty"}},
		{"static_no_prefixes", []string{"static_owners[0].prefixes: must list at least one address or CIDR prefix"}},
		{"static_bad_prefix", []string{`static_owners[0].prefixes: "203.0.113.1/24" has host bits set; did you mean 203.0.113.0/24?`}},
		{"static_duplicate", []string{"static_owners[1].prefixes: 203.0.113.0/24 is already in static_owners[0]"}},
		{"static_reserved_id", []string{`static_owners[0].attributes: attribute name "id" is reserved for the owner ID`}},
		{"static_empty_attribute", []string{"static_owners[0].attributes: attribute name must not be empty"}},
		{"bad_owner_limits", []string{
			"owner_limits.max_id_length: must be positive, got 0",
			"owner_limits.max_attributes: must not be negative, got -1",
			"owner_limits.max_name_length: must be positive, got -1",
			"owner_limits.max_value_length: must be positive, got 0",
		}},
		{"static_beyond_limits", []string{
			`static_owners[1].id: "load-balancer" is 13 bytes, more than max_id_length (8)`,
			`static_owners[2].attributes: "service.name": value is 10 bytes, more than max_value_length (8)`,
		}},
		{"sender_without_prefixes", []string{"senders[node-a]: list the CIDR prefixes or addresses this sender may claim"}},
		{"sender_bad_prefix", []string{`senders[node-a][0]: "10.1.0.1/16" has host bits set; did you mean 10.1.0.0/16?`}},
		{"negative", []string{
			"max_wait must not be negative", "max_future must not be negative",
			"merge_gap must not be negative", "clock_skew must not be negative",
		}},
		{"retention_short", []string{"retention (10s) must be longer than max_wait (30s)"}},
		{"zero_limits", []string{"max_pending must be positive when max_wait is set", "max_keys must be positive"}},
		{"empty_names", []string{"key_attribute must not be empty", "time_attribute must not be empty", "owner_prefix must not be empty"}},
		{"bad_sender_identity", []string{`sender_identity must be "none" or "certificate", got "cert"`}},
		{"prefix_clobbers", []string{`owner_prefix "flowattr." would replace "flowattr.flow.start_time_unix_nano", "flowattr.local.owner.", `, `"flowattr.flow.role"`}},
		{"prefix_clobbers_flow", []string{`owner_prefix "server." would replace "server.address", "server.port"`}},
		{"prefix_in_local_owner", []string{`owner_prefix "flowattr.local.owner.peer." lies inside flowattr.local.owner.`}},
		{"prefix_is_local_workload", []string{`owner_prefix "flowattr.local.workload." would replace "flowattr.local.workload."`}},
		{"prefix_in_local_workload", []string{`translated_owner_prefix "flowattr.local.workload.backend." lies inside flowattr.local.workload.: the owner written there would be read as attributes of the flow's local workload`}},
		{"translated_overlap", []string{`owner_prefix "flowattr.peer.owner." and translated_owner_prefix "flowattr.peer.owner.backend." overlap`}},
		{"translated_clobbers", []string{`translated_owner_prefix "flowattr.peer." would replace "flowattr.peer.attribution.status", "flowattr.peer.attribution.reason", "flowattr.peer.translated.address"`}},
		{"translated_without_key", []string{"translated_key_attribute must not be empty while translated_owner_prefix is set"}},
		{"key_is_time", []string{`key_attribute and time_attribute must differ, both are "flowattr.flow.start_time_unix_nano"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(t, tt.name)
			require.Error(t, err)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestValidateDisabledHold(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.MaxWait = 0
	cfg.MaxPending = 0
	require.NoError(t, cfg.Validate())
}

// Prefixes are read by owners.ParsePrefix: a bare address is the prefix of
// that address alone, and IPv4-mapped IPv6 is read as IPv4.
func TestPrefixesAcceptAddresses(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.WorkloadCIDRs = []string{"10.0.0.7", "::ffff:10.1.0.0/112"}
	cfg.StaticOwners = []owners.Entry{{Prefixes: []string{"203.0.113.9", "::ffff:198.51.100.0/120"}, ID: "lb"}}
	cfg.Senders = map[string][]string{"node-a": {"10.0.0.7"}}
	require.NoError(t, cfg.Validate())
	tables, err := cfg.tables()
	require.NoError(t, err)
	for addr, want := range map[string]bool{"10.0.0.7": true, "10.0.0.8": false, "10.1.200.5": true, "10.2.0.5": false} {
		assert.Equal(t, want, tables.isWorkload(mustAddr(addr)), addr)
	}
	assert.True(t, tables.mayClaim("node-a", mustAddr("10.0.0.7")))
	assert.False(t, tables.mayClaim("node-a", mustAddr("10.1.0.5")))
	for addr, want := range map[string]bool{"203.0.113.9": true, "203.0.113.10": false, "198.51.100.200": true} {
		_, ok := tables.static.Lookup(mustAddr(addr))
		assert.Equal(t, want, ok, addr)
	}
}
