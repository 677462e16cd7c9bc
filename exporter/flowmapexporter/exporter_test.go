package flowmapexporter

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/flowattr/flowattr/exporter/flowmapexporter/internal/metadatatest"
	"github.com/flowattr/flowattr/internal/clock"
	"github.com/flowattr/flowattr/internal/flowschema"
)

// startExporter runs the exporter on a free loopback port and returns it
// with the URL its startup log names.
func startExporter(t *testing.T, c clock.Clock) (exporter.Logs, string, *componenttest.Telemetry) {
	t.Helper()
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	core, logs := observer.New(zap.InfoLevel)
	set := metadatatest.NewSettings(tel)
	set.Logger = zap.New(core)
	cfg := createDefaultConfig()
	cfg.ServerConfig.NetAddr.Endpoint = "127.0.0.1:0"
	exp, err := NewFactoryWithClock(c).CreateLogs(context.Background(), set, cfg)
	require.NoError(t, err)
	require.NoError(t, exp.Start(context.Background(), componenttest.NewNopHost()))
	t.Cleanup(func() { require.NoError(t, exp.Shutdown(context.Background())) })
	var url string
	for _, e := range logs.All() {
		if m := regexp.MustCompile(`^Live workload map at (http://127\.0\.0\.1:\d+/)$`).FindStringSubmatch(e.Message); m != nil {
			url = m[1]
		}
	}
	require.NotEmpty(t, url, "the startup log names the map's URL")
	return exp, url, tel
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(body)
}

// The exporter serves the page, its script and the vendored library with
// its licence, and the map as JSON; its telemetry counts what it did.
func TestExporterServesMap(t *testing.T) {
	c := clock.NewManual(t0)
	exp, url, tel := startExporter(t, c)

	require.NoError(t, exp.ConsumeLogs(context.Background(), logsOf(
		rec{local: frontend, peer: checkout, peerPort: 8080, sent: 100, received: 200, srttUS: 512},
		rec{local: frontend, status: "external", reason: "outside_workload_cidrs"},
		rec{local: frontend, peer: checkout, state: flowschema.FlowStateActive},
		rec{event: flowschema.EventClaim},
	)))
	c.Advance(time.Second)

	resp, body := get(t, url+"api/graph")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var g Graph
	require.NoError(t, json.Unmarshal([]byte(body), &g))
	assert.Equal(t, t0.Add(time.Second), g.End.UTC())
	assert.Equal(t, 300.0, g.WindowSeconds)
	assert.Equal(t, "k8s.namespace.name", g.GroupBy)
	require.Len(t, g.Edges, 2)
	assert.Equal(t, idFrontend+" -> external", g.Edges[0].ID)
	assert.Equal(t, Edge{
		ID: idFrontend + " -> " + idCheckout, Source: idFrontend, Target: idCheckout,
		Figures:       Figures{Flows: 1, RTT: RTT{P50: 512, P90: 512, P99: 512, Samples: 1}, Ports: []PortFlows{{Port: 8080, Flows: 1}}},
		BytesToServer: 100, BytesToClient: 200,
	}, g.Edges[1])
	assert.Len(t, g.Nodes, 3)

	resp, body = get(t, url)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, body, `<script src="static/app.js"`)
	assert.Contains(t, resp.Header.Get("Content-Security-Policy"), "default-src 'self'")
	for path, want := range map[string]string{
		"static/app.js":    "window.flowmap",
		"static/style.css": "#graph",
		"static/vendor/cytoscape/cytoscape.min.js": "The Cytoscape Consortium",
		"static/vendor/cytoscape/LICENSE":          "Permission is hereby granted",
	} {
		resp, body := get(t, url+path)
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
		assert.Contains(t, body, want, path)
	}
	resp, _ = get(t, url+"nothing-here")
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	post, err := http.Post(url+"api/graph", "application/json", strings.NewReader("{}"))
	require.NoError(t, err)
	post.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, post.StatusCode)

	ignore := []metricdatatest.Option{metricdatatest.IgnoreTimestamp(), metricdatatest.IgnoreExemplars()}
	outcome := func(o string, v int64) metricdata.DataPoint[int64] {
		return metricdata.DataPoint[int64]{Value: v, Attributes: attribute.NewSet(attribute.String("outcome", o))}
	}
	metadatatest.AssertEqualExporterFlowmapRecords(t, tel, []metricdata.DataPoint[int64]{
		outcome("mapped", 2), outcome("interim", 1), outcome("not_flow", 1), outcome("owner_too_large", 0),
	}, ignore...)
	kind := func(k string) metricdata.DataPoint[int64] {
		return metricdata.DataPoint[int64]{Value: 0, Attributes: attribute.NewSet(attribute.String("kind", k))}
	}
	metadatatest.AssertEqualExporterFlowmapFolded(t, tel, []metricdata.DataPoint[int64]{kind("node"), kind("edge")}, ignore...)
	gauge := attribute.NewSet(attribute.String("exporter", "flowmap"))
	metadatatest.AssertEqualExporterFlowmapNodes(t, tel, []metricdata.DataPoint[int64]{{Value: 3, Attributes: gauge}}, ignore...)
	metadatatest.AssertEqualExporterFlowmapEdges(t, tel, []metricdata.DataPoint[int64]{{Value: 2, Attributes: gauge}}, ignore...)
}

// An empty map is served as empty lists, not null, so a script can
// iterate it.
func TestExporterEmptyGraph(t *testing.T) {
	_, url, _ := startExporter(t, clock.NewManual(t0))
	_, body := get(t, url+"api/graph")
	assert.Contains(t, body, `"nodes":[]`)
	assert.Contains(t, body, `"edges":[]`)
}

// The URL a user is shown keeps the configured host name and takes the
// port listened on.
func TestMapURL(t *testing.T) {
	for endpoint, want := range map[string]string{
		"localhost:8990": "http://localhost:8990/",
		"0.0.0.0:8990":   "http://localhost:8990/",
		":8990":          "http://localhost:8990/",
		"[::1]:8990":     "http://[::1]:8990/",
	} {
		cfg := createDefaultConfig()
		cfg.ServerConfig.NetAddr.Endpoint = endpoint
		addr := &fakeAddr{"127.0.0.1:8990"}
		assert.Equal(t, want, mapURL(cfg, addr), endpoint)
	}
}

type fakeAddr struct{ s string }

func (a *fakeAddr) Network() string { return "tcp" }
func (a *fakeAddr) String() string  { return a.s }

// A second exporter on a taken address fails to start with an error that
// says what to change.
func TestExporterAddressInUse(t *testing.T) {
	_, url, _ := startExporter(t, clock.NewManual(t0))
	cfg := createDefaultConfig()
	cfg.ServerConfig.NetAddr.Endpoint = strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/")
	exp, err := NewFactory().CreateLogs(context.Background(), metadatatest.NewSettings(componenttest.NewTelemetry()), cfg)
	require.NoError(t, err)
	err = exp.Start(context.Background(), componenttest.NewNopHost())
	require.ErrorContains(t, err, "change endpoint to a free address")
	require.NoError(t, exp.Shutdown(context.Background()))
}

// On loopback the map answers only requests addressed to a loopback name:
// a page of another site whose name resolves to 127.0.0.1 (DNS rebinding)
// must not read it from the browser of someone on this host.
func TestMapRefusesOtherHostNames(t *testing.T) {
	_, url, _ := startExporter(t, clock.NewManual(t0))
	port := strings.TrimSuffix(url[strings.LastIndex(url, ":")+1:], "/")
	for host, want := range map[string]int{
		"127.0.0.1:" + port:          http.StatusOK,
		"localhost:" + port:          http.StatusOK,
		"LOCALHOST":                  http.StatusOK,
		"[::1]:" + port:              http.StatusOK,
		"attacker.example:" + port:   http.StatusForbidden,
		"attacker.example":           http.StatusForbidden,
		"127.0.0.1.attacker.example": http.StatusForbidden,
	} {
		for _, path := range []string{"", "api/graph", "static/app.js"} {
			req, err := http.NewRequest(http.MethodGet, url+path, nil)
			require.NoError(t, err)
			req.Host = host
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, want, resp.StatusCode, "Host %s, /%s", host, path)
		}
	}

	// Listening beyond loopback, the map is meant to be reached by name.
	cfg := createDefaultConfig()
	cfg.ServerConfig.NetAddr.Endpoint = "0.0.0.0:8990"
	h := newHandler(newAggregate(clock.NewManual(t0), cfg.Window, cfg.MaxNodes, cfg.MaxEdges, cfg.OwnerLimits), cfg)
	req := httptest.NewRequest(http.MethodGet, "http://flowmap.example:8990/api/graph", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	assert.Equal(t, http.StatusOK, rec.Code)
}

// However many pages poll it, one snapshot of the map serves every request
// for up to a second: the flows wait for the aggregate's lock at most once
// a second. It is served gzipped to clients that take it, and names are
// not HTML-escaped into six times their length.
func TestGraphSnapshotSharedAndCompressed(t *testing.T) {
	c := clock.NewManual(t0)
	exp, url, _ := startExporter(t, c)
	names := func() []string {
		_, body := get(t, url+"api/graph")
		var g Graph
		require.NoError(t, json.Unmarshal([]byte(body), &g))
		var out []string
		for _, n := range g.Nodes {
			out = append(out, n.Name)
		}
		slices.Sort(out)
		return out
	}
	odd := workload("w-odd", "<b>&</b>", "shop")
	require.NoError(t, exp.ConsumeLogs(context.Background(), logsOf(rec{local: frontend, peer: odd})))
	first := names()
	require.NoError(t, exp.ConsumeLogs(context.Background(), logsOf(rec{local: frontend, peer: checkout})))
	c.Advance(maxGraphAge - time.Millisecond)
	assert.Equal(t, first, names(), "the same snapshot within maxGraphAge")
	c.Advance(time.Millisecond)
	assert.Len(t, names(), len(first)+1, "a new snapshot after it")

	req, err := http.NewRequest(http.MethodGet, url+"api/graph", nil)
	require.NoError(t, err)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, "gzip", resp.Header.Get("Content-Encoding"))
	zr, err := gzip.NewReader(resp.Body)
	require.NoError(t, err)
	plain, err := io.ReadAll(zr)
	require.NoError(t, err)
	_, body := get(t, url+"api/graph")
	assert.Equal(t, body, string(plain))
	assert.Contains(t, body, `"<b>&</b>"`)

	req.Header.Set("Accept-Encoding", "gzip;q=0, identity")
	resp2, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp2.Body.Close()
	assert.Empty(t, resp2.Header.Get("Content-Encoding"))
}

// A count that is no non-negative integer is read as 0 and counted, not
// taken in silence.
func TestExporterCountsRejectedValues(t *testing.T) {
	exp, _, tel := startExporter(t, clock.NewManual(t0))
	require.NoError(t, exp.ConsumeLogs(context.Background(), logsOf(
		rec{local: frontend, peer: checkout, sent: -1, received: 10},
		rec{local: frontend, peer: checkout, sent: 1, received: 10, retransmits: -2},
		rec{local: frontend, peer: checkout, sent: 1, received: 10},
	)))
	metadatatest.AssertEqualExporterFlowmapValuesRejected(t, tel, []metricdata.DataPoint[int64]{{Value: 2}}, metricdatatest.IgnoreTimestamp(), metricdatatest.IgnoreExemplars())
}
