package fleetsim

import (
	"context"
	"errors"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/processor/processortest"

	"github.com/flowattr/flowattr/processor/ownershipprocessor"
)

// newProcessor builds and starts the ownership processor under test on the
// simulation's clock, sending its output to next. Settings not in
// sc.Processor keep their defaults, except max_pending, which is raised to
// the number of flows so that a large fleet measures attribution rather
// than the hold's size limit.
func newProcessor(ctx context.Context, sc Scenario, clock *Clock, next *consumertest.LogsSink) (processor.Logs, error) {
	f := ownershipprocessor.NewFactoryWithClock(clock)
	cfg := f.CreateDefaultConfig().(*ownershipprocessor.Config)
	cfg.MaxWait = sc.Processor.MaxWait
	cfg.ClockSkew = sc.Processor.ClockSkew
	cfg.MergeGap = sc.Processor.MergeGap
	cfg.Retention = sc.Processor.Retention
	cfg.MaxPending = max(cfg.MaxPending, sc.Flows)
	cfg.MaxKeys = max(cfg.MaxKeys, sc.IPs)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p, err := f.CreateLogs(ctx, processortest.NewNopSettings(f.Type()), cfg, next)
	if err != nil {
		return nil, err
	}
	if err := p.Start(ctx, componenttest.NewNopHost()); err != nil {
		return nil, errors.Join(err, p.Shutdown(ctx))
	}
	return p, nil
}
