package flowmapexporter // import "github.com/flowattr/flowattr/exporter/flowmapexporter"

import (
	"context"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"

	"github.com/flowattr/flowattr/exporter/flowmapexporter/internal/metadata"
	"github.com/flowattr/flowattr/internal/clock"
)

// NewFactory returns the factory of the flowmap exporter, on the wall
// clock: NewFactoryWithClock(clock.System{}).
func NewFactory() exporter.Factory {
	return NewFactoryWithClock(clock.System{})
}

// NewFactoryWithClock returns the factory of the flowmap exporter reading
// time from c: the slot a flow counts in, and the window a snapshot covers.
func NewFactoryWithClock(c clock.Clock) exporter.Factory {
	return exporter.NewFactory(
		metadata.Type,
		func() component.Config { return createDefaultConfig() },
		exporter.WithLogs(func(ctx context.Context, set exporter.Settings, cfg component.Config) (exporter.Logs, error) {
			return createLogs(ctx, set, cfg.(*Config), c)
		}, metadata.LogsStability),
	)
}

func createLogs(ctx context.Context, set exporter.Settings, cfg *Config, c clock.Clock) (exporter.Logs, error) {
	e, err := newFlowmap(set, cfg, c)
	if err != nil {
		return nil, err
	}
	// No queue or retry: adding to the map never fails for a reason that
	// waiting would mend, and it is in memory.
	return exporterhelper.NewLogs(ctx, set, cfg, e.consume,
		exporterhelper.WithCapabilities(consumer.Capabilities{MutatesData: false}),
		exporterhelper.WithStart(e.start),
		exporterhelper.WithShutdown(e.shutdown),
	)
}
