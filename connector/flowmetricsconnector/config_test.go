package flowmetricsconnector

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"

	"github.com/flowattr/flowattr/connector/flowmetricsconnector/internal/metadata"
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
	assert.Equal(t, &Config{Interval: 30 * time.Second, MaxSeries: 500, OwnerAttribute: "service.name"}, cfg)
}

func TestValidateErrors(t *testing.T) {
	_, err := loadConfig(t, "bad")
	require.Error(t, err)
	for _, want := range []string{
		"interval must be at least 100ms, got 10ms",
		"max_series must be positive, got 0",
		`owner_attribute must name an owner attribute without surrounding spaces, e.g. id or service.name, got ""`,
	} {
		assert.ErrorContains(t, err, want)
	}
}
