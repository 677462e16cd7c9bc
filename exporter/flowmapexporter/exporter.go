package flowmapexporter // import "github.com/flowattr/flowattr/exporter/flowmapexporter"

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/flowattr/flowattr/exporter/flowmapexporter/internal/metadata"
	"github.com/flowattr/flowattr/internal/clock"
)

// flowmap is the exporter: the aggregate, its HTTP server and telemetry.
type flowmap struct {
	cfg      *Config
	set      exporter.Settings
	agg      *aggregate
	parser   parser
	tel      *metadata.TelemetryBuilder
	outcomes [numOutcomes]metric.MeasurementOption
	folded   [2]metric.MeasurementOption // node, edge

	// scratch reuses flow and result slices across batches.
	scratch sync.Pool

	server   *http.Server
	serveErr chan error
}

type scratch struct {
	flows   []flow
	results []addResult
}

func newFlowmap(set exporter.Settings, cfg *Config, c clock.Clock) (*flowmap, error) {
	tel, err := metadata.NewTelemetryBuilder(set.TelemetrySettings)
	if err != nil {
		return nil, err
	}
	e := &flowmap{
		cfg:    cfg,
		set:    set,
		agg:    newAggregate(c, cfg.Window, cfg.MaxNodes, cfg.MaxEdges, cfg.OwnerLimits),
		parser: newParser(cfg.NodeAttribute, cfg.GroupBy),
		tel:    tel,
	}
	e.scratch.New = func() any { return &scratch{} }
	for o := range e.outcomes {
		e.outcomes[o] = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", outcomeNames[o])))
	}
	e.folded[0] = metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", "node")))
	e.folded[1] = metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", "edge")))
	gauge := metric.WithAttributeSet(attribute.NewSet(attribute.String("exporter", set.ID.String())))
	err = errors.Join(
		tel.RegisterExporterFlowmapNodesCallback(func(_ context.Context, o metric.Int64Observer) error {
			nodes, _ := e.agg.sizes()
			o.Observe(int64(nodes), gauge)
			return nil
		}),
		tel.RegisterExporterFlowmapEdgesCallback(func(_ context.Context, o metric.Int64Observer) error {
			_, edges := e.agg.sizes()
			o.Observe(int64(edges), gauge)
			return nil
		}),
	)
	if err != nil {
		tel.Shutdown()
		return nil, err
	}
	// Counters at zero from the start, so that an alert on folding or
	// rejections finds data before the first event.
	ctx := context.Background()
	for _, o := range e.outcomes {
		tel.ExporterFlowmapRecords.Add(ctx, 0, o)
	}
	for _, o := range e.folded {
		tel.ExporterFlowmapFolded.Add(ctx, 0, o)
	}
	return e, nil
}

func (e *flowmap) start(ctx context.Context, host component.Host) error {
	ln, err := e.cfg.ServerConfig.ToListener(ctx)
	if err != nil {
		return fmt.Errorf("flowmap: listening on %s: %w (change endpoint to a free address)", e.cfg.ServerConfig.NetAddr.Endpoint, err)
	}
	e.server, err = e.cfg.ServerConfig.ToServer(ctx, host.GetExtensions(), e.set.TelemetrySettings, newHandler(e.agg, e.cfg))
	if err != nil {
		ln.Close()
		return err
	}
	e.serveErr = make(chan error, 1)
	go func() {
		err := e.server.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		e.serveErr <- err
	}()
	e.set.Logger.Info("Live workload map at "+mapURL(e.cfg, ln.Addr()), zap.Duration("window", e.cfg.Window))
	return nil
}

// mapURL is the page's address as a user types it: the configured host
// (a name such as localhost stays a name) with the port listened on.
func mapURL(cfg *Config, addr net.Addr) string {
	scheme := "http"
	if cfg.ServerConfig.TLS.HasValue() {
		scheme = "https"
	}
	host, _, err := net.SplitHostPort(cfg.ServerConfig.NetAddr.Endpoint)
	_, port, perr := net.SplitHostPort(addr.String())
	if err != nil || perr != nil {
		return scheme + "://" + addr.String() + "/"
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/"
}

func (e *flowmap) shutdown(ctx context.Context) error {
	e.tel.Shutdown()
	if e.server == nil {
		return nil
	}
	if err := e.server.Shutdown(ctx); err != nil {
		return err
	}
	return <-e.serveErr
}

func (e *flowmap) consume(ctx context.Context, ld plog.Logs) error {
	sc := e.scratch.Get().(*scratch)
	defer e.scratch.Put(sc)
	// parse writes a mapped record's flow whole: no zeroing first.
	flows := slices.Grow(sc.flows[:0], ld.LogRecordCount())[:ld.LogRecordCount()]
	n := 0
	var counts [numOutcomes]int64
	rejected := 0
	for _, rl := range ld.ResourceLogs().All() {
		for _, sl := range rl.ScopeLogs().All() {
			for _, lr := range sl.LogRecords().All() {
				o, bad := e.parser.parse(lr, &flows[n])
				if o != outcomeMapped {
					counts[o]++
					continue
				}
				rejected += bad
				n++
			}
		}
	}
	flows = flows[:n]
	results := slices.Grow(sc.results[:0], len(flows))[:len(flows)]
	e.agg.addBatch(flows, results)
	var foldedNodes, foldedEdges int64
	for _, r := range results {
		switch {
		case r.ownerTooLarge:
			counts[outcomeOwnerTooLarge]++
		default:
			counts[outcomeMapped]++
		}
		if r.foldedNode {
			foldedNodes++
		}
		if r.foldedEdge {
			foldedEdges++
		}
	}
	// The pooled flows must not keep the batch's attribute maps alive.
	clear(flows)
	sc.flows, sc.results = flows, results
	for o, n := range counts {
		if n > 0 {
			e.tel.ExporterFlowmapRecords.Add(ctx, n, e.outcomes[o])
		}
	}
	if rejected > 0 {
		e.tel.ExporterFlowmapValuesRejected.Add(ctx, int64(rejected))
	}
	if foldedNodes > 0 {
		e.tel.ExporterFlowmapFolded.Add(ctx, foldedNodes, e.folded[0])
	}
	if foldedEdges > 0 {
		e.tel.ExporterFlowmapFolded.Add(ctx, foldedEdges, e.folded[1])
	}
	return nil
}
