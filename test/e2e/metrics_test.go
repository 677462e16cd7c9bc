package e2e

import (
	"context"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/test/internal/collectortest"
)

// metricsMaxWait is the ownership processor's max_wait in the metrics test:
// the flow to a never-claimed peer comes out unattributed after it.
const metricsMaxWait = 2 * time.Second

// metricFlow is a flow record for the metrics test, written as the ebpfflow
// receiver writes one.
type metricFlow struct {
	role        string // client or server
	state       string
	local, peer string
	serverPort  int64
	localOwner  string
	duration    time.Duration
	sent, recvd int64
	retransmits int64
	srttMicros  int64  // 0: absent, as on a failed connect
	err         string // flowattr.flow.error, "" when clean
}

func putMetricFlow(lr plog.LogRecord, f metricFlow, end time.Time) {
	lr.SetEventName(flowschema.EventFlow)
	lr.SetTimestamp(pcommon.NewTimestampFromTime(end))
	a := lr.Attributes()
	a.PutStr(flowschema.AttrNetworkTransport, "tcp")
	a.PutStr(flowschema.AttrNetworkType, "ipv4")
	a.PutStr(flowschema.AttrNetworkLocalAddress, f.local)
	a.PutStr(flowschema.AttrNetworkPeerAddress, f.peer)
	if f.role == flowschema.RoleClient {
		a.PutInt(flowschema.AttrNetworkLocalPort, 40000)
		a.PutInt(flowschema.AttrNetworkPeerPort, f.serverPort)
		a.PutStr(flowschema.AttrServerAddress, f.peer)
	} else {
		a.PutInt(flowschema.AttrNetworkLocalPort, f.serverPort)
		a.PutInt(flowschema.AttrNetworkPeerPort, 40000)
		a.PutStr(flowschema.AttrServerAddress, f.local)
	}
	a.PutInt(flowschema.AttrServerPort, f.serverPort)
	a.PutStr(flowschema.AttrFlowRole, f.role)
	a.PutStr(flowschema.AttrFlowState, f.state)
	a.PutInt(flowschema.AttrFlowStartTime, end.Add(-f.duration).UnixNano())
	a.PutInt(flowschema.AttrFlowBytesSent, f.sent)
	a.PutInt(flowschema.AttrFlowBytesReceived, f.recvd)
	a.PutInt(flowschema.AttrFlowRetransmits, f.retransmits)
	if f.srttMicros > 0 {
		a.PutInt(flowschema.AttrFlowSRTT, f.srttMicros)
	}
	if f.err != "" {
		a.PutStr(flowschema.AttrFlowError, f.err)
	}
	flowschema.PutOwner(a, flowschema.PrefixLocalOwner, owners.Owner{ID: f.localOwner})
}

// TestFlowMetrics runs the built collector on the shipped
// config/metrics.yaml, fed over OTLP/gRPC instead of from the kernel, sends
// a known set of claims and flow records, and scrapes its Prometheus
// endpoint: every series has the exact value the flows make, by local
// workload, peer workload, server port, role and attribution status;
// unattributed and external peers are series of their own; interim
// records and claims count nowhere; and the series are cumulative across
// the connector's intervals.
func TestFlowMetrics(t *testing.T) {
	otlpPort, healthPort, promPort, metricsPort := collectortest.FreePort(t), collectortest.FreePort(t), collectortest.FreePort(t), collectortest.FreePort(t)
	col := collectortest.Start(t, collectortest.Options{
		Configs: []string{"../../config/metrics.yaml", "../../testdata/e2e-metrics.yaml"},
		Env: map[string]string{
			"FLOWATTR_E2E_OTLP_PORT":       strconv.Itoa(otlpPort),
			"FLOWATTR_E2E_HEALTH_PORT":     strconv.Itoa(healthPort),
			"FLOWATTR_E2E_PROMETHEUS_PORT": strconv.Itoa(promPort),
			"FLOWATTR_E2E_METRICS_PORT":    strconv.Itoa(metricsPort),
			"FLOWATTR_E2E_MAX_WAIT":        metricsMaxWait.String(),
		},
	})
	col.WaitReady(t, "127.0.0.1:"+strconv.Itoa(healthPort))
	client := dialOTLP(t, otlpPort)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	send := func(fill func(plog.LogRecordSlice)) {
		t.Helper()
		ld := plog.NewLogs()
		rl := ld.ResourceLogs().AppendEmpty()
		rl.Resource().Attributes().PutStr("host.name", "node-a")
		fill(rl.ScopeLogs().AppendEmpty().LogRecords())
		exportLogs(ctx, t, client, ld)
	}

	now := time.Now()
	checkout := owners.Owner{ID: "checkout"}
	// 10.2.0.1 is checkout's; 10.2.0.9 never sends a claim; 198.51.100.7
	// lies outside the workload ranges.
	send(func(lrs plog.LogRecordSlice) {
		flowschema.PutClaim(lrs.AppendEmpty(), flowschema.Claim{
			Address: netip.MustParseAddr("10.2.0.1"), Owner: checkout,
			Start: now.Add(-time.Minute), End: now.Add(-100 * time.Millisecond), Sender: "node-b",
		})
	})
	client443 := metricFlow{role: flowschema.RoleClient, state: flowschema.FlowStateClosed, local: "10.1.0.1", localOwner: "frontend", peer: "10.2.0.1", serverPort: 443}
	flows := []metricFlow{
		with(client443, func(f *metricFlow) {
			f.duration, f.sent, f.recvd, f.retransmits, f.srttMicros = 2*time.Second, 1000, 5000, 2, 1500
		}),
		with(client443, func(f *metricFlow) {
			f.duration, f.sent, f.recvd, f.srttMicros = 300*time.Millisecond, 500, 2500, 3000
		}),
		with(client443, func(f *metricFlow) {
			f.state, f.duration, f.err = flowschema.FlowStateFailed, time.Millisecond, "ECONNREFUSED"
		}),
		// Still open: its counters so far count nowhere.
		with(client443, func(f *metricFlow) {
			f.state, f.duration, f.sent, f.recvd, f.retransmits, f.srttMicros = flowschema.FlowStateActive, 30*time.Second, 99999, 99999, 9, 900
		}),
		{
			role: flowschema.RoleServer, state: flowschema.FlowStateClosed, local: "10.1.0.1", localOwner: "frontend", peer: "10.2.0.1", serverPort: 8080,
			duration: 20 * time.Millisecond, sent: 300, recvd: 100, srttMicros: 250,
		},
		{
			role: flowschema.RoleClient, state: flowschema.FlowStateClosed, local: "10.1.0.1", localOwner: "frontend", peer: "198.51.100.7", serverPort: 443,
			duration: time.Second, sent: 100, recvd: 200, retransmits: 1, srttMicros: 40000,
		},
		{
			role: flowschema.RoleClient, state: flowschema.FlowStateClosed, local: "10.1.0.1", localOwner: "frontend", peer: "10.2.0.9", serverPort: 5432,
			duration: 50 * time.Millisecond, sent: 10, recvd: 20, srttMicros: 700,
		},
	}
	send(func(lrs plog.LogRecordSlice) {
		for _, f := range flows {
			putMetricFlow(lrs.AppendEmpty(), f, now.Add(-5*time.Second))
		}
	})

	// Labels of a series: the flow's attributes, named as the Prometheus
	// exporter writes them.
	labels := func(peerOwner, port, role, status string, extra ...string) map[string]string {
		l := map[string]string{
			"host_name": "node-a", "flowattr_local_owner_id": "frontend",
			"server_port": port, "flowattr_flow_role": role, "flowattr_peer_attribution_status": status,
		}
		if peerOwner != "" {
			l["flowattr_peer_owner_id"] = peerOwner
		}
		for i := 0; i+1 < len(extra); i += 2 {
			l[extra[i]] = extra[i+1]
		}
		return l
	}
	checkoutClient := labels("checkout", "443", "client", "attributed")
	checkoutServer := labels("checkout", "8080", "server", "attributed")
	external := labels("", "443", "client", "external")
	unattributed := labels("", "5432", "client", "unattributed")
	with2 := func(l map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range l {
			out[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	io := func(l map[string]string, dir string) map[string]string { return with2(l, "network_io_direction", dir) }

	type want struct {
		name   string
		labels map[string]string
		value  float64
	}
	wants := []want{
		{"flowattr_network_io_bytes_total", io(checkoutClient, "transmit"), 1500},
		{"flowattr_network_io_bytes_total", io(checkoutClient, "receive"), 7500},
		{"flowattr_network_io_bytes_total", io(checkoutServer, "transmit"), 300},
		{"flowattr_network_io_bytes_total", io(checkoutServer, "receive"), 100},
		{"flowattr_network_io_bytes_total", io(external, "transmit"), 100},
		{"flowattr_network_io_bytes_total", io(external, "receive"), 200},
		{"flowattr_network_io_bytes_total", io(unattributed, "transmit"), 10},
		{"flowattr_network_io_bytes_total", io(unattributed, "receive"), 20},
		// Connections are the duration histogram's count; failed ones carry
		// their error.
		{"flowattr_connection_duration_seconds_count", checkoutClient, 2},
		{"flowattr_connection_duration_seconds_sum", checkoutClient, 2.3},
		{"flowattr_connection_duration_seconds_bucket", with2(checkoutClient, "le", "0.1"), 0},
		{"flowattr_connection_duration_seconds_bucket", with2(checkoutClient, "le", "0.5"), 1},
		{"flowattr_connection_duration_seconds_bucket", with2(checkoutClient, "le", "5"), 2},
		{"flowattr_connection_duration_seconds_count", with2(checkoutClient, "flowattr_flow_error", "ECONNREFUSED"), 1},
		{"flowattr_connection_duration_seconds_sum", with2(checkoutClient, "flowattr_flow_error", "ECONNREFUSED"), 0.001},
		{"flowattr_connection_duration_seconds_count", checkoutServer, 1},
		{"flowattr_connection_duration_seconds_count", external, 1},
		{"flowattr_connection_duration_seconds_count", unattributed, 1},
		// The failed connect has no round-trip time.
		{"flowattr_connection_rtt_seconds_count", checkoutClient, 2},
		{"flowattr_connection_rtt_seconds_sum", checkoutClient, 0.0045},
		{"flowattr_connection_rtt_seconds_bucket", with2(checkoutClient, "le", "0.001"), 0},
		{"flowattr_connection_rtt_seconds_bucket", with2(checkoutClient, "le", "0.0025"), 1},
		{"flowattr_connection_rtt_seconds_bucket", with2(checkoutClient, "le", "0.005"), 2},
		{"flowattr_connection_rtt_seconds_count", checkoutServer, 1},
		{"flowattr_connection_rtt_seconds_sum", external, 0.04},
		{"flowattr_connection_rtt_seconds_sum", unattributed, 0.0007},
		{"flowattr_connection_retransmits_total", checkoutClient, 2},
		{"flowattr_connection_retransmits_total", checkoutServer, 0},
		{"flowattr_connection_retransmits_total", external, 1},
		{"flowattr_connection_retransmits_total", unattributed, 0},
	}
	check := func(samples []collectortest.Sample, wants []want) (bad []string) {
		for _, w := range wants {
			got := collectortest.Series(samples, w.name, w.labels)
			switch {
			case len(got) != 1:
				bad = append(bad, w.name+strconv.Quote(labelString(w.labels))+": "+strconv.Itoa(len(got))+" samples")
			case math.Abs(got[0].Value-w.value) > 1e-9*math.Max(1, math.Abs(w.value)):
				bad = append(bad, w.name+strconv.Quote(labelString(w.labels))+" = "+strconv.FormatFloat(got[0].Value, 'g', -1, 64)+", want "+strconv.FormatFloat(w.value, 'g', -1, 64))
			}
		}
		return bad
	}
	promAddr := "127.0.0.1:" + strconv.Itoa(promPort)
	scrape := func() []collectortest.Sample {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		body, err := col.Get(ctx, promAddr, "/metrics")
		if err != nil {
			t.Fatalf("scraping %s: %v", promAddr, err)
		}
		return collectortest.Samples(body)
	}
	// The unattributed flow comes out after max_wait; until then its
	// series is missing.
	waitFor := func(wants []want) []collectortest.Sample {
		t.Helper()
		deadline := time.Now().Add(metricsMaxWait + 20*time.Second)
		for {
			samples := scrape()
			bad := check(samples, wants)
			if len(bad) == 0 {
				return samples
			}
			if time.Now().After(deadline) {
				for _, s := range samples {
					if strings.HasPrefix(s.Name, "flowattr_") {
						t.Logf("%s{%s} %v", s.Name, labelString(s.Labels), s.Value)
					}
				}
				t.Fatalf("metrics not as expected: %v", bad)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	samples := waitFor(wants)
	// The interim record added nothing to the values above; neither it nor
	// the claim made series of their own.
	if n := countSeries(samples, "flowattr_network_io_bytes_total"); n != 8 {
		t.Errorf("%d flowattr_network_io_bytes_total series, want 8", n)
	}
	if n := countSeries(samples, "flowattr_connection_duration_seconds_count"); n != 5 {
		t.Errorf("%d flowattr_connection_duration_seconds_count series, want 5", n)
	}

	// A second batch adds to the same series: they are cumulative.
	send(func(lrs plog.LogRecordSlice) {
		putMetricFlow(lrs.AppendEmpty(), with(client443, func(f *metricFlow) {
			f.duration, f.sent, f.recvd, f.retransmits, f.srttMicros = time.Second, 1, 2, 3, 100
		}), now.Add(-5*time.Second))
	})
	waitFor([]want{
		{"flowattr_network_io_bytes_total", io(checkoutClient, "transmit"), 1501},
		{"flowattr_network_io_bytes_total", io(checkoutClient, "receive"), 7502},
		{"flowattr_connection_duration_seconds_count", checkoutClient, 3},
		{"flowattr_connection_rtt_seconds_bucket", with2(checkoutClient, "le", "0.0001"), 1},
		{"flowattr_connection_retransmits_total", checkoutClient, 5},
		{"flowattr_network_io_bytes_total", io(external, "transmit"), 100},
	})

	// Seven final records counted, the interim one not; nothing dropped.
	own := col.Metrics(t, "127.0.0.1:"+strconv.Itoa(metricsPort))
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"otelcol_connector_flowmetrics_records", nil, 7},
		{"otelcol_connector_flowmetrics_records_dropped", nil, 0},
		{"otelcol_deltatocumulative_datapoints", []string{"error", "limit"}, 0},
	} {
		if n := collectortest.MetricSum(own, c.name, c.labels...); n != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, n, c.want)
		}
	}
	col.Stop(t)
}

func with(f metricFlow, edit func(*metricFlow)) metricFlow {
	edit(&f)
	return f
}

func countSeries(samples []collectortest.Sample, name string) int {
	n := 0
	for _, s := range samples {
		if s.Name == name {
			n++
		}
	}
	return n
}

func labelString(labels map[string]string) string {
	var b []byte
	for _, k := range sortedKeys(labels) {
		b = append(b, k+"="+labels[k]+","...)
	}
	return string(b)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
