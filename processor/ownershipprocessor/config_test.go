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
		KeyAttribute:     "server.address",
		TimeAttribute:    "custom.start",
		OwnerPrefix:      "peer.",
		KeepClaims:       true,
		ApplyLocalClaims: false,
		MaxFuture:        2 * time.Minute,
		MaxWait:          10 * time.Second,
		MaxPending:       500,
		WorkloadCIDRs:    []string{"10.0.0.0/8", "fd00::/8"},
		StaticOwners: []StaticOwner{{
			CIDR:       "203.0.113.0/24",
			ID:         "lb-public",
			Attributes: map[string]string{"service.name": "edge"},
		}},
		Senders: map[string][]string{
			"node-a": {"10.1.0.0/16"},
			"node-b": {"10.2.0.0/16", "fd00:2::/32"},
		},
		SenderIdentity: "certificate",
		MergeGap:       10 * time.Second,
		ClockSkew:      500 * time.Millisecond,
		Retention:      5 * time.Minute,
		MaxKeys:        1000,
	}, cfg)
}

func TestValidateErrors(t *testing.T) {
	tests := []struct {
		name string
		want []string
	}{
		{"bad_cidr", []string{`workload_cidrs[0]: "10.0.0/8" is not a CIDR prefix`}},
		{"host_bits", []string{`workload_cidrs[0]: "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?`}},
		{"static_without_workload", []string{"static_owners[0]: static owners name addresses outside workload_cidrs, but workload_cidrs is empty"}},
		{"static_overlap", []string{"static_owners[0].cidr 10.1.0.0/16 overlaps workload_cidrs"}},
		{"static_no_id", []string{"static_owners[0].id must not be empty"}},
		{"static_reserved_id", []string{`static_owners[0].attributes: "id" is reserved for the owner ID; use the entry's id field`}},
		{"static_empty_attribute", []string{"static_owners[0].attributes: an attribute name must not be empty"}},
		{"source_without_cidrs", []string{"sources[node-a]: list the CIDRs this source may claim"}},
		{"negative", []string{
			"max_wait must not be negative", "max_future must not be negative",
			"merge_gap must not be negative", "clock_skew must not be negative",
		}},
		{"retention_short", []string{"retention (10s) must be longer than max_wait (30s)"}},
		{"zero_limits", []string{"max_pending must be positive when max_wait is set", "max_keys must be positive"}},
		{"empty_names", []string{"key_attribute must not be empty", "time_attribute must not be empty", "owner_prefix must not be empty"}},
		{"bad_source_identity", []string{`sender_identity must be "none" or "certificate", got "cert"`}},
		{"prefix_clobbers", []string{`owner_prefix "flowattr." would replace "flowattr.flow.start_time_unix_nano", "flowattr.local.owner.", `, `"flowattr.flow.role"`}},
		{"prefix_clobbers_flow", []string{`owner_prefix "server." would replace "server.address", "server.port"`}},
		{"prefix_in_local_owner", []string{`owner_prefix "flowattr.local.owner.peer." lies inside flowattr.local.owner.`}},
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
