// Package e2e runs the built otelcol-flowattr binary as a separate process
// and talks to it only over the network, as a user's pipeline would.
package e2e

import (
	"context"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/test/internal/collectortest"
)

// maxWait is the ownership processor's max_wait in the test configuration.
const maxWait = 3 * time.Second

// caseAttr tags each flow record with the name of its test case, so that the
// records can be matched up at the sink.
const caseAttr = "e2e.case"

// flow is a flow record to send and the attribution expected on it.
type flow struct {
	name       string
	local      string
	localOwner owners.Owner // zero: the frontend owner
	peer       string
	start      time.Time
	wantOwner  *owners.Owner // nil: expect no owner written
	// wantStatus and wantReason are the attribution status and, when not
	// empty, reason expected on the record.
	wantStatus string
	wantReason string
}

func owner(id, service string) owners.Owner {
	return owners.Owner{ID: id, Attributes: []owners.Attribute{{Name: "service.name", Value: service}}}
}

// TestOwnershipPipeline drives the built collector with claims and flow
// records over OTLP/gRPC and checks the attributions that come out: known
// peers attributed, an address reused by a second owner attributed by flow
// start time and never to the wrong owner, a flow sent before its claim
// held and then attributed, and a peer that never sends a claim left
// unattributed once max_wait has passed. Claims are consumed, not
// forwarded.
func TestOwnershipPipeline(t *testing.T) {
	sink := collectortest.StartSink(t)
	otlpPort, healthPort, metricsPort := collectortest.FreePort(t), collectortest.FreePort(t), collectortest.FreePort(t)
	col := collectortest.Start(t, collectortest.Options{
		Configs: []string{"../../testdata/e2e-ownership.yaml"},
		Env: map[string]string{
			"FLOWATTR_E2E_OTLP_PORT":    strconv.Itoa(otlpPort),
			"FLOWATTR_E2E_HEALTH_PORT":  strconv.Itoa(healthPort),
			"FLOWATTR_E2E_METRICS_PORT": strconv.Itoa(metricsPort),
			"FLOWATTR_E2E_SINK_PORT":    strconv.Itoa(int(sink.Addr.Port())),
		},
	})
	col.WaitReady(t, "127.0.0.1:"+strconv.Itoa(healthPort))
	// The counters an operator alerts on are exported from the start, at
	// zero, rather than missing until their first event.
	atStart := col.Metrics(t, "127.0.0.1:"+strconv.Itoa(metricsPort))
	for _, series := range []struct{ name, label, value string }{
		{"otelcol_processor_ownership_claims_rejected", "reason", "owner_too_large"},
		{"otelcol_processor_ownership_claims_rejected", "reason", "unauthorized_sender"},
		{"otelcol_processor_ownership_local_claims_rejected", "reason", "outside_workload_cidrs"},
		{"otelcol_processor_ownership_records_released", "outcome", "overflow"},
		{"otelcol_processor_ownership_release_failures", "", ""},
		{"otelcol_processor_ownership_flows_without_local_owner", "", ""},
		{"otelcol_processor_ownership_records_awaiting_resend", "", ""},
	} {
		if !hasZeroSeries(atStart, series.name, series.label, series.value) {
			t.Errorf("no %s{%s=%q} at 0 at start", series.name, series.label, series.value)
		}
	}

	client := dialOTLP(t, otlpPort)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	now := time.Now()
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	frontend := owner("frontend", "frontend")
	checkout := owner("checkout", "checkout")
	inventory := owner("inventory", "inventory")
	oldBatch := owner("batch-7f9c", "batch")
	newAPI := owner("api-2d41", "api")
	payments := owner("payments", "payments")
	reporting := owner("reporting", "reporting")
	edgeLB := owner("edge-lb", "edge-load-balancer")

	// 10.2.0.5 belonged to a batch job, then after a gap to an API pod.
	claims := []flowschema.Claim{
		{Address: netip.MustParseAddr("10.2.0.1"), Owner: checkout, Start: ago(60 * time.Second), End: ago(time.Second), Sender: "node-a"},
		{Address: netip.MustParseAddr("fd00::2"), Owner: inventory, Start: ago(60 * time.Second), End: ago(time.Second), Sender: "node-a"},
		{Address: netip.MustParseAddr("10.2.0.5"), Owner: oldBatch, Start: ago(60 * time.Second), End: ago(40 * time.Second), Sender: "node-b"},
		{Address: netip.MustParseAddr("10.2.0.5"), Owner: newAPI, Start: ago(30 * time.Second), End: ago(time.Second), Sender: "node-b"},
		// Beyond the default owner_limits (values of at most 1024 bytes):
		// rejected, and no flow is attributed to it.
		{
			Address: netip.MustParseAddr("10.2.0.8"), Start: ago(60 * time.Second), End: ago(time.Second), Sender: "node-a",
			Owner: owners.Owner{ID: "bloated", Attributes: []owners.Attribute{{Name: "service.name", Value: strings.Repeat("x", 4096)}}},
		},
	}
	attributed, unattributed := "attributed", "unattributed"
	// Sent after the claims above; the last three wait for max_wait.
	flows := []flow{
		{name: "known_peer", local: "10.1.0.1", peer: "10.2.0.1", start: ago(30 * time.Second), wantOwner: &checkout, wantStatus: attributed},
		{name: "ipv6_peer", local: "fd00::1", peer: "fd00::2", start: ago(30 * time.Second), wantOwner: &inventory, wantStatus: attributed},
		{name: "reused_address_first_owner", local: "10.1.0.1", peer: "10.2.0.5", start: ago(50 * time.Second), wantOwner: &oldBatch, wantStatus: attributed},
		{name: "reused_address_second_owner", local: "10.1.0.1", peer: "10.2.0.5", start: ago(10 * time.Second), wantOwner: &newAPI, wantStatus: attributed},
		{name: "static_owner", local: "10.1.0.1", peer: "192.0.2.10", start: ago(30 * time.Second), wantOwner: &edgeLB, wantStatus: attributed},
		{name: "outside_workload_cidrs", local: "10.1.0.1", peer: "198.51.100.7", start: ago(30 * time.Second), wantStatus: "external", wantReason: "outside_workload_cidrs"},
		{name: "reused_address_gap", local: "10.1.0.1", peer: "10.2.0.5", start: ago(35 * time.Second), wantStatus: unattributed, wantReason: "gap"},
		{name: "never_claimed", local: "10.1.0.1", peer: "10.2.0.9", start: ago(10 * time.Second), wantStatus: unattributed, wantReason: "no_claim_yet"},
		{name: "owner_too_large", local: "10.1.0.1", peer: "10.2.0.8", start: ago(10 * time.Second), wantStatus: unattributed, wantReason: "no_claim_yet"},
	}
	// Sent after flows: the flow is held until its claim, sent next.
	heldFlow := flow{name: "held_until_claim", local: "10.1.0.1", peer: "10.2.0.7", start: ago(10 * time.Second), wantOwner: &payments, wantStatus: attributed}
	lateClaim := flowschema.Claim{Address: netip.MustParseAddr("10.2.0.7"), Owner: payments, Start: ago(20 * time.Second), End: ago(time.Second), Sender: "node-c"}
	// Sent last: the peer is an IPv4-mapped form of a claimed address, and an
	// address that only ever appeared as the local side of earlier flows,
	// claimed by those flows themselves (apply_local_claims).
	lastFlows := []flow{
		{name: "ipv4_mapped_peer", local: "10.1.0.1", peer: "::ffff:10.2.0.1", start: ago(25 * time.Second), wantOwner: &checkout, wantStatus: attributed},
		{name: "local_side_claim", local: "10.1.0.9", localOwner: reporting, peer: "10.1.0.1", start: ago(25 * time.Second), wantOwner: &frontend, wantStatus: attributed},
	}

	send := func(fill func(plog.LogRecordSlice)) {
		t.Helper()
		ld := plog.NewLogs()
		rl := ld.ResourceLogs().AppendEmpty()
		rl.Resource().Attributes().PutStr("service.name", "flowattr-e2e")
		fill(rl.ScopeLogs().AppendEmpty().LogRecords())
		exportLogs(ctx, t, client, ld)
	}
	putFlows := func(lrs plog.LogRecordSlice, fs []flow) {
		for _, f := range fs {
			if f.localOwner.ID == "" {
				f.localOwner = frontend
			}
			putFlow(lrs.AppendEmpty(), f)
		}
	}

	send(func(lrs plog.LogRecordSlice) {
		for _, c := range claims {
			flowschema.PutClaim(lrs.AppendEmpty(), c)
		}
	})
	flowsSent := time.Now()
	send(func(lrs plog.LogRecordSlice) { putFlows(lrs, flows) })
	send(func(lrs plog.LogRecordSlice) { putFlows(lrs, []flow{heldFlow}) })
	send(func(lrs plog.LogRecordSlice) { flowschema.PutClaim(lrs.AppendEmpty(), lateClaim) })
	send(func(lrs plog.LogRecordSlice) { putFlows(lrs, lastFlows) })

	all := slices.Concat(flows, []flow{heldFlow}, lastFlows)
	want := map[string]flow{}
	for _, f := range all {
		want[f.name] = f
	}
	got := map[string]collectortest.Record{}
	// File each record once, in arrival order; the loop ends right after a
	// pass, so every record received by then, a forwarded claim
	// included, has been checked.
	filed := 0
	file := func() {
		records := sink.Records()
		for _, rec := range records[filed:] {
			checkForwarded(t, rec, got)
		}
		filed = len(records)
	}
	deadline := time.Now().Add(maxWait + 30*time.Second)
	for file(); len(got) < len(want); file() {
		if time.Now().After(deadline) {
			t.Fatalf("received %d of %d flow records; missing %v", len(got), len(want), missing(want, got))
		}
		time.Sleep(50 * time.Millisecond)
	}

	for _, f := range all {
		t.Run(f.name, func(t *testing.T) { checkAttribution(t, f, got[f.name]) })
	}
	if waited := got["never_claimed"].Received.Sub(flowsSent); waited < maxWait {
		t.Errorf("never_claimed came out %s after it was sent, before max_wait (%s)", waited, maxWait)
	}

	metrics := col.Metrics(t, "127.0.0.1:"+strconv.Itoa(metricsPort))
	for outcome, want := range map[string]float64{"attributed": 1, "timeout": 3} {
		if n := collectortest.MetricSum(metrics, "otelcol_processor_ownership_records_released", "outcome", outcome); n != want {
			t.Errorf("records_released{outcome=%q} = %v, want %v", outcome, n, want)
		}
	}
	// Claim records and the local sides of flow records are counted apart:
	// the five claims applied and the oversized one rejected; every flow
	// record's local side (its owner in 10.0.0.0/8 or fd00::/8) applied.
	for _, c := range []struct {
		name  string
		label []string
		want  float64
	}{
		{"otelcol_processor_ownership_claims_applied", nil, 5},
		{"otelcol_processor_ownership_claims_rejected", []string{"reason", "owner_too_large"}, 1},
		{"otelcol_processor_ownership_claims_rejected", nil, 1},
		{"otelcol_processor_ownership_local_claims_applied", nil, float64(len(all))},
		{"otelcol_processor_ownership_local_claims_rejected", nil, 0},
		{"otelcol_processor_ownership_flows_without_local_owner", nil, 0},
	} {
		if n := collectortest.MetricSum(metrics, c.name, c.label...); n != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.label, n, c.want)
		}
	}

	col.Stop(t)
}

// hasZeroSeries reports whether the Prometheus exposition has a sample of
// the counter family name at 0 whose labels include label="value" (any
// labels, or none, when label is empty).
func hasZeroSeries(exposition, name, label, value string) bool {
	labels := `(?:\{[^}]*\})?`
	if label != "" {
		labels = `\{(?:[^}]*,)?` + regexp.QuoteMeta(label) + `="` + regexp.QuoteMeta(value) + `"[^}]*\}`
	}
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(?:_total)?` + labels + ` 0$`).MatchString(exposition)
}

// putFlow writes f as a closed client flow record lasting ten seconds from
// f.start, tagged with its case name.
func putFlow(lr plog.LogRecord, f flow) {
	collectortest.PutClientFlow(lr, collectortest.ClientFlow{
		Local:      netip.MustParseAddr(f.local),
		Peer:       netip.MustParseAddr(f.peer),
		LocalOwner: f.localOwner,
		Start:      f.start,
		End:        f.start.Add(10 * time.Second),
	})
	lr.Attributes().PutStr(caseAttr, f.name)
}

// checkForwarded files a record received by the sink under its case name,
// failing on anything that is not a flow record of a known case or that
// arrives twice.
func checkForwarded(t *testing.T, rec collectortest.Record, got map[string]collectortest.Record) {
	t.Helper()
	if rec.EventName != flowschema.EventFlow {
		t.Errorf("forwarded a record with event name %q, want only flow records (keep_claims is false): %v", rec.EventName, rec.Attrs)
		return
	}
	name, _ := rec.Attrs[caseAttr].(string)
	if _, dup := got[name]; dup {
		t.Errorf("flow record %q forwarded twice", name)
		return
	}
	got[name] = rec
}

func checkAttribution(t *testing.T, f flow, rec collectortest.Record) {
	t.Helper()
	if s := rec.Attrs[flowschema.AttrPeerAttributionStatus]; s != f.wantStatus {
		t.Errorf("status = %v, want %q (reason %v)", s, f.wantStatus, rec.Attrs[flowschema.AttrPeerAttributionReason])
	}
	if f.wantReason != "" {
		if r := rec.Attrs[flowschema.AttrPeerAttributionReason]; r != f.wantReason {
			t.Errorf("reason = %v, want %q", r, f.wantReason)
		}
	}
	if f.wantOwner == nil {
		for k, v := range rec.Attrs {
			if strings.HasPrefix(k, flowschema.PrefixPeerOwner) {
				t.Errorf("unattributed record carries peer owner attribute %s=%v", k, v)
			}
		}
		return
	}
	want := map[string]any{flowschema.PrefixPeerOwner + flowschema.OwnerIDSuffix: f.wantOwner.ID}
	for _, a := range f.wantOwner.Attributes {
		want[flowschema.PrefixPeerOwner+a.Name] = a.Value
	}
	gotOwner := map[string]any{}
	for k, v := range rec.Attrs {
		if strings.HasPrefix(k, flowschema.PrefixPeerOwner) {
			gotOwner[k] = v
		}
	}
	if !maps.Equal(gotOwner, want) {
		t.Errorf("peer owner = %v, want %v", gotOwner, want)
	}
}

func missing(want map[string]flow, got map[string]collectortest.Record) []string {
	var names []string
	for name := range want {
		if _, ok := got[name]; !ok {
			names = append(names, name)
		}
	}
	return names
}
