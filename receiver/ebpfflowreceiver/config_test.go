package ebpfflowreceiver

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"

	"github.com/flowattr/flowattr/internal/localowner/kube"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/metadata"
)

func loadConfig(t *testing.T, name string) *Config {
	t.Helper()
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	require.NoError(t, err)
	sub, err := cm.Sub(component.MustNewIDWithName(metadata.Type.String(), name).String())
	require.NoError(t, err)
	cfg := createDefaultConfig()
	require.NoError(t, sub.Unmarshal(cfg))
	return cfg
}

func TestLoadConfig(t *testing.T) {
	def := loadConfig(t, "")
	require.NoError(t, confmap.Validate(def))
	assert.Equal(t, createDefaultConfig(), def)
	assert.True(t, def.Filter.ExcludeLoopback)
	assert.True(t, def.Ownership.Static.HostAddresses)
	assert.Equal(t, []string{sourceStatic}, def.Ownership.sourceOrder(), "file source is off without a path")

	custom := loadConfig(t, "custom")
	require.NoError(t, confmap.Validate(custom))
	want := createDefaultConfig()
	want.RingBufferSize = 16 << 20
	want.MaxConnections = 200000
	want.QueueSize = 50000
	want.MaxBatchSize = 500
	want.FlushInterval = 200 * time.Millisecond
	want.ClaimInterval = 5 * time.Second
	want.ActiveInterval = time.Minute
	want.Sender = "node-a"
	want.Filter = FilterConfig{
		ExcludeCIDRs: []string{"169.254.169.254", "10.99.0.0/16"},
		IncludeCIDRs: []string{"10.0.0.0/8", "fd00::/8"},
		ExcludePorts: []int{22, 9100},
	}
	want.Ownership = OwnershipConfig{
		Precedence: []string{sourceStatic, sourceFile},
		Static: StaticSourceConfig{Entries: []owners.Entry{{
			Prefixes:   []string{"10.0.1.7", "10.0.2.0/24"},
			ID:         "checkout",
			Attributes: map[string]string{"service.name": "checkout"},
		}}},
		File:        FileSourceConfig{Path: "/run/ipam/owners.yaml", PollInterval: 2 * time.Second},
		OwnerLimits: owners.Limits{MaxIDLength: 256, MaxAttributes: 32, MaxNameLength: 256, MaxValueLength: 4096},
	}
	want.ResourceAttributes.HostID.Enabled = false
	// The generated config records which fields the user set; compare the
	// values that matter.
	assert.Equal(t, want.ResourceAttributes.HostID.Enabled, custom.ResourceAttributes.HostID.Enabled)
	custom.ResourceAttributes = want.ResourceAttributes
	assert.Equal(t, want, custom)
	assert.Equal(t, []string{sourceStatic, sourceFile}, custom.Ownership.sourceOrder())

	k := loadConfig(t, "kubernetes")
	require.NoError(t, confmap.Validate(k))
	assert.Equal(t, kube.Config{
		Enabled: true, NodeName: "node-a", Kubeconfig: "/etc/kube/config", Services: true, RestrictToPodCIDRs: true,
		Extract: kube.ExtractConfig{
			Labels:      []kube.Extraction{{Key: "app.kubernetes.io/part-of"}},
			Annotations: []kube.Extraction{{Key: "example.com/team", TagName: "team"}},
		},
	}, k.Ownership.Kubernetes)
	assert.Equal(t, []string{sourceKubernetes, sourceStatic}, k.Ownership.sourceOrder(), "the default precedence: kubernetes first")
}

func TestValidateErrors(t *testing.T) {
	tests := []struct {
		name string
		want []string
	}{
		{"bad_ring", []string{"ring_buffer_size: 5000 is not a power of two"}},
		{"bad_intervals", []string{
			"queue_size: must be positive, got 0",
			"max_batch_size: must be positive, got -1",
			"flush_interval: must be positive, got 0s",
			"claim_interval: must be at least 1s, got 100ms",
			"active_interval: must be 0 (disabled) or at least 1s, got 10ms",
		}},
		{"bad_filter", []string{
			`filter.exclude_cidrs: "10.0.0.5/8" has host bits set; did you mean 10.0.0.0/8?`,
			`filter.include_cidrs: "not-an-ip" is neither an IP address nor a CIDR prefix`,
			"filter.exclude_ports: 0 is not a port in [1, 65535]",
			"filter.exclude_ports: 70000 is not a port in [1, 65535]",
		}},
		{"bad_static", []string{
			"ownership.static.entries[0].id: must not be empty",
			"ownership.static.entries[1].prefixes: must list at least one address or CIDR prefix",
			`ownership.static.entries[2].attributes: attribute name "id" is reserved for the owner ID`,
			"ownership.static.entries[4].prefixes: 10.0.0.3/32 is already in ownership.static.entries[3]; give each address or prefix one owner",
		}},
		{"bad_limits", []string{
			"ownership.owner_limits.max_id_length: must be positive, got 0",
			"ownership.owner_limits.max_attributes: must not be negative, got -1",
			"ownership.owner_limits.max_name_length: must be positive, got 0",
			"ownership.owner_limits.max_value_length: must be positive, got -5",
		}},
		{"static_beyond_limits", []string{
			"ownership.static.entries[1].attributes: 2 attributes, more than max_attributes (1)",
			`ownership.static.entries[2].attributes: "service.name": value is 16 bytes, more than max_value_length (8)`,
		}},
		{"bad_precedence", []string{
			"ownership.file.poll_interval: must be at least 100ms, got 10ms",
			`ownership.precedence: source "static" listed twice`,
			`ownership.precedence: unknown source "kubelet"`,
			`ownership.precedence: enabled source "file" is missing`,
		}},
		{"bad_kubernetes", []string{
			`ownership.precedence: enabled source "kubernetes" is missing`,
			"ownership.kubernetes.extract.labels[0].key: must not be empty",
			`ownership.kubernetes.extract.annotations[0].tag_name: "k8s.pod.name" is an attribute the source sets itself`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := confmap.Validate(loadConfig(t, tt.name))
			require.Error(t, err)
			for _, w := range tt.want {
				assert.ErrorContains(t, err, w)
			}
		})
	}
}

func TestValidateDefaultAndZeroActive(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.ActiveInterval = 0
	assert.NoError(t, cfg.Validate(), "active_interval 0 disables interim records")
	var _ confmap.Validator = cfg
}
