package e2e

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/localowner"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/test/internal/collectortest"
)

// showsUpWithin is how soon a flow to an outside address must show up on
// the default configuration.
const showsUpWithin = 2 * time.Second

// TestDefaultConfigOutsidePeer runs the built collector on the shipped
// config/default.yaml, fed over OTLP/gRPC instead of from the kernel, as a
// new user's first connection would be: a flow to an address outside the
// workload ranges (no workload there will ever send a claim) shows up on
// the console and downstream within showsUpWithin, marked external, while
// flows to a private address and to the host's own address wait for their
// claims.
func TestDefaultConfigOutsidePeer(t *testing.T) {
	sink := collectortest.StartSink(t)
	otlpPort, healthPort := collectortest.FreePort(t), collectortest.FreePort(t)
	col := collectortest.Start(t, collectortest.Options{
		Configs: []string{"../../config/default.yaml", "../../testdata/e2e-default.yaml"},
		Env: map[string]string{
			"FLOWATTR_E2E_OTLP_PORT":   strconv.Itoa(otlpPort),
			"FLOWATTR_E2E_HEALTH_PORT": strconv.Itoa(healthPort),
			"FLOWATTR_E2E_SINK_PORT":   strconv.Itoa(int(sink.Addr.Port())),
		},
	})
	col.WaitReady(t, "127.0.0.1:"+strconv.Itoa(healthPort))
	client := dialOTLP(t, otlpPort)

	// A documentation address stands for the internet: the record names it,
	// nothing is sent to it.
	outside := netip.MustParseAddr("198.51.100.7")
	waiting := []netip.Addr{netip.MustParseAddr("10.2.0.9")}
	if own := nonPrivateHostAddr(t); own.IsValid() {
		waiting = append(waiting, own)
	} else {
		t.Log("this host has no address outside the private ranges: the host's own address is not tried")
	}
	local := owners.Owner{ID: "frontend"}
	now := time.Now()
	ld := plog.NewLogs()
	lrs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	for _, peer := range append([]netip.Addr{outside}, waiting...) {
		collectortest.PutClientFlow(lrs.AppendEmpty(), collectortest.ClientFlow{
			Local: netip.MustParseAddr("10.1.0.1"), Peer: peer, LocalOwner: local,
			Start: now.Add(-time.Second), End: now,
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sent := time.Now()
	if _, err := client.Export(ctx, plogotlp.NewExportRequestFromLogs(ld)); err != nil {
		t.Fatalf("export: %v", err)
	}

	var got collectortest.Record
	for {
		if recs := sink.Records(); len(recs) > 0 {
			got = recs[0]
			break
		}
		if time.Since(sent) > showsUpWithin {
			t.Fatalf("no flow record downstream %s after the flow to %s was sent", showsUpWithin, outside)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if peer, status, reason := got.Str(flowschema.AttrNetworkPeerAddress), got.Str(flowschema.AttrPeerAttributionStatus), got.Str(flowschema.AttrPeerAttributionReason); peer != outside.String() || status != "external" || reason != "outside_workload_cidrs" {
		t.Errorf("first record: peer %s, status %q, reason %q; want %s, external, outside_workload_cidrs", peer, status, reason, outside)
	}
	for !strings.Contains(col.Output(), "external") {
		if time.Since(sent) > showsUpWithin {
			t.Fatalf("the console does not show the external flow %s after it was sent", showsUpWithin)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The others wait for claims (max_wait 30s): still nothing of them a
	// moment later.
	time.Sleep(time.Second)
	if recs := sink.Records(); len(recs) != 1 {
		t.Errorf("%d records downstream, want only the external one: flows to %v must wait for their claims", len(recs), waiting)
	}
	col.Stop(t)
}

// nonPrivateHostAddr returns an address of this host outside the default
// configuration's private ranges, or the zero Addr.
func nonPrivateHostAddr(t *testing.T) netip.Addr {
	t.Helper()
	addrs, err := localowner.HostUnicastAddrs()
	if err != nil {
		t.Fatal(err)
	}
	cgnat := netip.MustParsePrefix("100.64.0.0/10")
	for _, a := range addrs {
		if !a.IsPrivate() && !cgnat.Contains(a) {
			return a
		}
	}
	return netip.Addr{}
}

// TestDefaultConfigMetricsBlock uncomments the flow metrics blocks of
// config/default.yaml: they are config/metrics.yaml's pieces, and with
// flowmetrics among the logs pipeline's exporters the built
// collector accepts the result.
func TestDefaultConfigMetricsBlock(t *testing.T) {
	bin := collectortest.Binary(t)
	raw, err := os.ReadFile("../../config/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	commented := regexp.MustCompile(`^(\s*)#(?: (.*))?$`)
	var out []string
	inBlock, blocks := false, 0
	for line := range strings.Lines(string(raw)) {
		line = strings.TrimRight(line, "\n")
		switch strings.TrimSpace(line) {
		case "# flow metrics: begin":
			inBlock = true
			blocks++
			continue
		case "# flow metrics: end":
			inBlock = false
			continue
		}
		if m := commented.FindStringSubmatch(line); inBlock && m != nil {
			line = m[1] + m[2]
		}
		out = append(out, line)
	}
	if blocks != 4 || inBlock {
		t.Fatalf("config/default.yaml has %d flow metrics blocks (open at the end: %v), want 4 closed ones", blocks, inBlock)
	}
	uncommented := strings.Join(out, "\n")
	var got, want map[string]any
	if err := yaml.Unmarshal([]byte(uncommented), &got); err != nil {
		t.Fatalf("uncommented config/default.yaml: %v\n%s", err, uncommented)
	}
	raw, err = os.ReadFile("../../config/metrics.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	for _, path := range [][]string{
		{"connectors"},
		{"processors", "delta_to_cumulative"},
		{"exporters", "prometheus"},
		{"service", "pipelines", "metrics"},
	} {
		if g, w := lookupPath(got, path), lookupPath(want, path); w == nil || !reflect.DeepEqual(g, w) {
			t.Errorf("%s in config/default.yaml's flow metrics blocks differs from config/metrics.yaml's:\n%v\nwant\n%v", strings.Join(path, "."), g, w)
		}
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "default-with-metrics.yaml")
	if err := os.WriteFile(path, []byte(uncommented), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "validate", "--config="+path, "--set=service.pipelines.logs.exporters=[debug,flowmap,flowmetrics]")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("validate on the uncommented default configuration: %v\n%s", err, b)
	}
}

func lookupPath(m map[string]any, path []string) any {
	var v any = m
	for _, k := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}
