package flowmetricsconnector // import "github.com/flowattr/flowattr/connector/flowmetricsconnector"

import (
	"context"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/connector"
	"go.opentelemetry.io/collector/consumer"

	"github.com/flowattr/flowattr/connector/flowmetricsconnector/internal/metadata"
	"github.com/flowattr/flowattr/internal/clock"
)

// NewFactory returns the factory of the flow metrics connector, on the wall
// clock.
func NewFactory() connector.Factory {
	return NewFactoryWithClock(clock.System{})
}

// NewFactoryWithClock returns the factory of the flow metrics connector
// whose intervals run on c: on a clock.Manual, for tests, an interval's
// metrics are emitted when the clock is advanced past its end.
func NewFactoryWithClock(c clock.Clock) connector.Factory {
	return connector.NewFactory(
		metadata.Type,
		func() component.Config { return createDefaultConfig() },
		connector.WithLogsToMetrics(func(_ context.Context, set connector.Settings, cfg component.Config, next consumer.Metrics) (connector.Logs, error) {
			return newFlowMetrics(set, cfg.(*Config), c, next)
		}, metadata.LogsToMetricsStability),
	)
}
