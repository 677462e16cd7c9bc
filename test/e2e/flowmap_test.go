package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/test/internal/collectortest"
)

// mapFlow is a flow record from a client's side with the figures the map
// shows.
type mapFlow struct {
	local, peer    string
	localOwner     owners.Owner
	peerPort       int64
	sent, received int64
	srttUS         int64
	errName        string // a failed connect
}

func shopOwner(id, service, namespace string) owners.Owner {
	return owners.Owner{ID: id, Attributes: []owners.Attribute{
		{Name: "k8s.namespace.name", Value: namespace},
		{Name: "service.name", Value: service},
	}}
}

// Node IDs on the page: workloads by namespace and service name.
const (
	mapFrontend  = "w/shop/frontend"
	mapCheckout  = "w/shop/checkout"
	mapInventory = "w/shop/inventory"
	mapPayments  = "w/payments/payments"
)

// TestFlowmapInBrowser feeds the built collector (otlp -> ownership ->
// flowmap) a known set of claims and flows over OTLP/gRPC, then drives
// headless Chromium against the map it serves: the expected workloads,
// buckets and edges are drawn, grouped by namespace; a click on an edge
// and on a workload shows their figures; a screenshot is saved as a test
// artifact; choosing no grouping removes the group boxes and lays the
// nodes out again. The same map is checked as JSON first.
func TestFlowmapInBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	otlpPort, healthPort, mapPort := collectortest.FreePort(t), collectortest.FreePort(t), collectortest.FreePort(t)
	col := collectortest.Start(t, collectortest.Options{
		Configs: []string{"../../testdata/e2e-flowmap.yaml"},
		Env: map[string]string{
			"FLOWATTR_E2E_OTLP_PORT":   strconv.Itoa(otlpPort),
			"FLOWATTR_E2E_HEALTH_PORT": strconv.Itoa(healthPort),
			"FLOWATTR_E2E_MAP_PORT":    strconv.Itoa(mapPort),
		},
	})
	col.WaitReady(t, "127.0.0.1:"+strconv.Itoa(healthPort))
	mapAddr := "127.0.0.1:" + strconv.Itoa(mapPort)
	if want := fmt.Sprintf("Live workload map at http://127.0.0.1:%d/", mapPort); !strings.Contains(col.Output(), want) {
		t.Errorf("the collector's log does not say %q", want)
	}

	frontend := shopOwner("frontend-6f8d", "frontend", "shop")
	checkout := shopOwner("checkout-5b2c", "checkout", "shop")
	inventory := shopOwner("inventory-9a1e", "inventory", "shop")
	payments := shopOwner("payments-77e0", "payments", "payments")
	now := time.Now()
	claims := []flowschema.Claim{
		{Address: netip.MustParseAddr("10.2.0.1"), Owner: checkout, Start: now.Add(-time.Minute), End: now, Sender: "node-b"},
		{Address: netip.MustParseAddr("10.2.0.3"), Owner: inventory, Start: now.Add(-time.Minute), End: now, Sender: "node-b"},
		{Address: netip.MustParseAddr("10.3.0.1"), Owner: payments, Start: now.Add(-time.Minute), End: now, Sender: "node-c"},
	}
	flows := []mapFlow{
		{local: "10.1.0.1", localOwner: frontend, peer: "10.2.0.1", peerPort: 8080, sent: 1000, received: 5000, srttUS: 1024},
		{local: "10.1.0.1", localOwner: frontend, peer: "10.2.0.1", peerPort: 8080, sent: 2000, received: 5000, srttUS: 2048},
		{local: "10.1.0.1", localOwner: frontend, peer: "10.2.0.1", peerPort: 8080, sent: 3000, received: 5000, srttUS: 1024},
		{local: "10.2.0.1", localOwner: checkout, peer: "10.3.0.1", peerPort: 9000, sent: 400, received: 100, srttUS: 300},
		{local: "10.2.0.1", localOwner: checkout, peer: "10.3.0.1", peerPort: 9000, errName: "ECONNREFUSED"},
		{local: "10.2.0.1", localOwner: checkout, peer: "10.2.0.3", peerPort: 7000, sent: 800, received: 64000, srttUS: 150},
		// Outside workload_cidrs: the external bucket.
		{local: "10.1.0.1", localOwner: frontend, peer: "198.51.100.7", peerPort: 443, sent: 700, received: 9000, srttUS: 20000},
		// Never claimed: unattributed once max_wait has passed.
		{local: "10.1.0.1", localOwner: frontend, peer: "10.2.0.9", peerPort: 8080, sent: 10, received: 0, srttUS: 1024},
	}
	sendMapRecords(t, otlpPort, claims, flows, now)

	wantNodes := []string{"external", "unattributed", mapCheckout, mapFrontend, mapInventory, mapPayments}
	wantEdges := []string{
		mapCheckout + " -> " + mapInventory, mapCheckout + " -> " + mapPayments,
		mapFrontend + " -> external", mapFrontend + " -> unattributed", mapFrontend + " -> " + mapCheckout,
	}
	slices.Sort(wantNodes)
	slices.Sort(wantEdges)

	// The JSON for scripts: wait until the held flow has left the hold.
	var graph struct {
		Nodes []struct{ ID string } `json:"nodes"`
		Edges []struct {
			ID            string `json:"id"`
			Flows         uint64 `json:"flows"`
			BytesToServer uint64 `json:"bytes_to_server"`
		} `json:"edges"`
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		body, err := col.Get(ctx, mapAddr, "/api/graph")
		cancel()
		if err != nil {
			t.Fatalf("GET /api/graph: %v", err)
		}
		if err := json.Unmarshal([]byte(body), &graph); err != nil {
			t.Fatalf("GET /api/graph: %v in %s", err, body)
		}
		var edges []string
		for _, e := range graph.Edges {
			edges = append(edges, e.ID)
		}
		slices.Sort(edges)
		if slices.Equal(edges, wantEdges) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("edges in /api/graph: %q, want %q", edges, wantEdges)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, e := range graph.Edges {
		if e.ID == mapFrontend+" -> "+mapCheckout && (e.Flows != 3 || e.BytesToServer != 6000) {
			t.Errorf("frontend -> checkout in JSON: %d flows, %d bytes to server; want 3 and 6000", e.Flows, e.BytesToServer)
		}
	}

	// The page, as a person sees it.
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.WindowSize(1280, 800))
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	defer cancelTimeout()

	type drawnMap struct {
		Nodes   []string          `json:"nodes"`
		Edges   []string          `json:"edges"`
		Parents map[string]string `json:"parents"`
	}
	err := chromedp.Do(ctx,
		chromedp.Navigate("http://"+mapAddr+"/"),
		chromedp.Poll[chromedp.Void](`window.flowmap && window.flowmap.renders() > 0 && window.flowmap.cy.edges().length === `+strconv.Itoa(len(wantEdges)), chromedp.WithPollingTimeout(20*time.Second)),
	)
	if err != nil {
		t.Fatalf("loading the map in Chromium: %v", err)
	}
	drawn, err := chromedp.Run(ctx, chromedp.Evaluate[drawnMap](`(() => {
		const cy = window.flowmap.cy;
		const leaves = cy.nodes().filter((n) => n.data('kind') !== 'group');
		const parents = {};
		leaves.forEach((n) => { parents[n.id()] = n.parent().empty() ? '' : n.parent().data('label'); });
		return { nodes: leaves.map((n) => n.id()).sort(), edges: cy.edges().map((e) => e.id()).sort(), parents };
	})()`))
	if err != nil {
		t.Fatalf("reading the map drawn: %v", err)
	}
	if !slices.Equal(drawn.Nodes, wantNodes) {
		t.Errorf("nodes drawn: %q, want %q", drawn.Nodes, wantNodes)
	}
	if !slices.Equal(drawn.Edges, wantEdges) {
		t.Errorf("edges drawn: %q, want %q", drawn.Edges, wantEdges)
	}
	for id, want := range map[string]string{mapFrontend: "shop", mapCheckout: "shop", mapInventory: "shop", mapPayments: "payments", "external": "", "unattributed": ""} {
		if got := drawn.Parents[id]; got != want {
			t.Errorf("%s drawn in group %q, want %q", id, got, want)
		}
	}

	// A click on the frontend -> checkout edge, then on the frontend node.
	clickAndRead := func(what, at string) map[string]string {
		t.Helper()
		xy, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](`(() => {
			const el = window.flowmap.cy.getElementById(`+strconv.Quote(at)+`);
			const p = el.isEdge() ? el.renderedMidpoint() : el.renderedPosition();
			const box = document.getElementById('graph').getBoundingClientRect();
			return [box.left + p.x, box.top + p.y];
		})()`))
		if err == nil {
			err = chromedp.Do(ctx,
				chromedp.MouseClickXY(xy[0], xy[1]),
				chromedp.Poll[chromedp.Void](`document.getElementById('details-title').textContent === `+strconv.Quote(what), chromedp.WithPollingTimeout(5*time.Second)),
			)
		}
		var rows map[string]string
		if err == nil {
			rows, err = chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`Object.fromEntries([...document.querySelectorAll('#details-table tr')].map((tr) => [tr.cells[0].textContent, tr.cells[1].textContent]))`))
		}
		if err != nil {
			t.Fatalf("clicking %s: %v", at, err)
		}
		return rows
	}
	checkRows := func(what string, got, want map[string]string) {
		t.Helper()
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %q shows %q, want %q (all: %q)", what, k, got[k], v, got)
			}
		}
	}
	checkRows("edge frontend -> checkout", clickAndRead("frontend → checkout", mapFrontend+" -> "+mapCheckout), map[string]string{
		"Connections":           "3",
		"Failed":                "0%",
		"Bytes client → server": "6.00 kB (6,000 B)",
		"Bytes server → client": "15.0 kB (15,000 B)",
		"RTT p50 / p90 / p99":   "1.02 ms / 2.05 ms / 2.05 ms",
		"Server ports":          "8080 (3)",
		"Unattributed peers":    "0%",
	})
	checkRows("node frontend", clickAndRead("frontend", mapFrontend), map[string]string{
		"Kind":               "workload",
		"Group":              "shop",
		"Connections":        "5",
		"Bytes sent":         "6.71 kB (6,710 B)",
		"Unattributed peers": "1 of 5 (20%)",
		"External peers":     "1 of 5 (20%)",
		"service.name":       "frontend",
	})
	checkRows("edge checkout -> payments", clickAndRead("checkout → payments", mapCheckout+" -> "+mapPayments), map[string]string{
		"Connections":           "2",
		"Failed":                "1 of 2 (50%)",
		"Server ports":          "9000 (2)",
		"Bytes client → server": "400 B",
	})

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(t.ArtifactDir(), "flowmap.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the map: %s (kept with go test -artifacts)", path)

	// Regrouped by none, as a person picks it: no group boxes, and the
	// nodes laid out again apart from each other.
	type regrouped struct {
		Parents   int `json:"parents"`
		Positions int `json:"positions"`
		Leaves    int `json:"leaves"`
	}
	err = chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`(() => {
		const sel = document.getElementById('group-by');
		sel.value = '';
		sel.dispatchEvent(new Event('change'));
	})()`))
	if err != nil {
		t.Fatalf("choosing no grouping: %v", err)
	}
	got, err := chromedp.Run(ctx, chromedp.Evaluate[regrouped](`(() => {
		const cy = window.flowmap.cy;
		const leaves = cy.nodes().filter((n) => n.data('kind') !== 'group');
		const at = new Set(leaves.map((n) => Math.round(n.position('x')) + ',' + Math.round(n.position('y'))));
		return { parents: cy.nodes().filter((n) => n.data('kind') === 'group').length, positions: at.size, leaves: leaves.length };
	})()`))
	if err != nil {
		t.Fatalf("reading the regrouped map: %v", err)
	}
	if got.Parents != 0 || got.Leaves != len(wantNodes) || got.Positions != len(wantNodes) {
		t.Errorf("after choosing no grouping: %d group boxes, %d nodes at %d distinct positions; want 0 boxes and %d nodes apart", got.Parents, got.Leaves, got.Positions, len(wantNodes))
	}
	col.Stop(t)
}

// chromiumPath finds Debian's chromium; `make test` installs it. Outside
// CI a machine without it skips the test; in CI it fails.
func chromiumPath(t *testing.T) string {
	t.Helper()
	collectortest.Binary(t)
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("chromium not found: `make test` installs it (Debian package chromium): %v", err)
		}
		t.Skipf("chromium not found (apt-get install chromium, or run `make test`): %v", err)
	}
	return path
}

func sendMapRecords(t *testing.T, otlpPort int, claims []flowschema.Claim, flows []mapFlow, now time.Time) {
	t.Helper()
	client := dialOTLP(t, otlpPort)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	send := func(fill func(plog.LogRecordSlice)) {
		ld := plog.NewLogs()
		fill(ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords())
		exportLogs(ctx, t, client, ld)
	}
	send(func(lrs plog.LogRecordSlice) {
		for _, c := range claims {
			flowschema.PutClaim(lrs.AppendEmpty(), c)
		}
	})
	send(func(lrs plog.LogRecordSlice) {
		for _, f := range flows {
			lr := lrs.AppendEmpty()
			collectortest.PutClientFlow(lr, collectortest.ClientFlow{
				Local: netip.MustParseAddr(f.local), Peer: netip.MustParseAddr(f.peer), LocalOwner: f.localOwner,
				Start: now.Add(-20 * time.Second), End: now.Add(-10 * time.Second),
			})
			a := lr.Attributes()
			a.PutInt(flowschema.AttrNetworkPeerPort, f.peerPort)
			a.PutInt(flowschema.AttrServerPort, f.peerPort)
			a.PutInt(flowschema.AttrFlowBytesSent, f.sent)
			a.PutInt(flowschema.AttrFlowBytesReceived, f.received)
			if f.srttUS > 0 {
				a.PutInt(flowschema.AttrFlowSRTT, f.srttUS)
			}
			if f.errName != "" {
				a.PutStr(flowschema.AttrFlowState, flowschema.FlowStateFailed)
				a.PutStr(flowschema.AttrFlowError, f.errName)
			}
		}
	})
}
