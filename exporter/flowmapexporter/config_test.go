package flowmapexporter

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"

	"github.com/flowattr/flowattr/exporter/flowmapexporter/internal/metadata"
	"github.com/flowattr/flowattr/internal/owners"
)

func loadConfig(t *testing.T, name string) *Config {
	t.Helper()
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	require.NoError(t, err)
	sub, err := cm.Sub(component.NewIDWithName(metadata.Type, name).String())
	require.NoError(t, err)
	cfg := createDefaultConfig()
	require.NoError(t, sub.Unmarshal(cfg))
	return cfg
}

func TestConfigDefaults(t *testing.T) {
	cfg := loadConfig(t, "")
	require.NoError(t, confmap.Validate(cfg))
	assert.Equal(t, "localhost:8990", cfg.ServerConfig.NetAddr.Endpoint, "loopback by default")
	assert.Equal(t, 5*time.Minute, cfg.Window)
	assert.Equal(t, "service.name", cfg.NodeAttribute)
	assert.Equal(t, "k8s.namespace.name", cfg.GroupBy)
	assert.Equal(t, 500, cfg.MaxNodes)
	assert.Equal(t, 2000, cfg.MaxEdges)
	assert.Equal(t, owners.DefaultLimits(), cfg.OwnerLimits)
}

func TestConfigCustom(t *testing.T) {
	cfg := loadConfig(t, "custom")
	require.NoError(t, confmap.Validate(cfg))
	assert.Equal(t, "127.0.0.1:9999", cfg.ServerConfig.NetAddr.Endpoint)
	assert.Equal(t, time.Minute, cfg.Window)
	assert.Equal(t, "id", cfg.NodeAttribute)
	assert.Equal(t, "k8s.cluster.name", cfg.GroupBy)
	assert.Equal(t, 50, cfg.MaxNodes)
	assert.Equal(t, 100, cfg.MaxEdges)
	assert.Equal(t, 5*time.Second, cfg.Refresh)
	assert.Equal(t, owners.Limits{MaxIDLength: 64, MaxAttributes: 4, MaxNameLength: 64, MaxValueLength: 128}, cfg.OwnerLimits)
}

// Every bad setting is reported at once, each saying what to change.
func TestConfigValidateErrors(t *testing.T) {
	err := confmap.Validate(loadConfig(t, "bad"))
	require.Error(t, err)
	for _, want := range []string{
		"endpoint must not be empty: give the address to serve the map on, e.g. localhost:8990",
		"window must be between 10s and 24h0m0s, got 1s",
		"node_attribute must not be empty",
		"max_nodes must be between 1 and 100000, got 0",
		"max_edges must be between 1 and 100000, got 1000000 (each edge keeps about 3 KiB)",
		"refresh must be at least 100ms, got 1ms",
		"owner_limits.max_id_length: must be positive, got 0",
	} {
		assert.ErrorContains(t, err, want)
	}
	assert.ErrorContains(t, confmap.Validate(loadConfig(t, "same")),
		`group_by and node_attribute are both "k8s.namespace.name"`)
}
