//go:build linux

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/localowner"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/test/internal/collectortest"
)

// Owners of serverAddr and clientAddr in the ownership file, in turn. No
// owner ID is a prefix of another, so a load of a file cut short within
// fileOwnerB shows as an ID that is none of these.
const (
	fileOwnerA = "ownerfile-a-frontend"
	fileOwnerB = "ownerfile-b-checkout-7f9c"
	// fileOwnerC is named by a file that must never load: another of its
	// entries is beyond the owner limits.
	fileOwnerC = "ownerfile-c-never-loaded"
)

const (
	// filePoll is ownership.file.poll_interval in
	// testdata/e2e-ownershipfile.yaml.
	filePoll = 100 * time.Millisecond
	// fileWait bounds every wait for the collector: a reload counter to
	// move, a log line, flow and claim records to arrive.
	fileWait = 15 * time.Second
	// chunkGap is the pause between two writes of a file rewritten in
	// place: well under the source's 100ms settle time, so no partial
	// content stays the same for two reads 100ms apart.
	chunkGap = 30 * time.Millisecond
	// reloadWarning is the message logged for each load error.
	reloadWarning = "Cannot load ownership file; keeping the last good map"
)

// ownershipFile is an ownership file naming id the owner of the test's
// two loopback addresses.
func ownershipFile(id, service string) string {
	return "# written in place by TestOwnershipFile\n" +
		"- prefixes: [" + serverAddr + ", " + clientAddr + "]\n" +
		"  id: " + id + "\n" +
		"  attributes:\n" +
		"    service.name: " + service + "\n" +
		"    k8s.namespace.name: shop\n"
}

// TestOwnershipFile runs the collector with the ebpfflow receiver learning
// the owner of the test's loopback addresses from an ownership file only,
// polled every 100ms, and rewrites that file in place (truncate, then
// write) as a careless writer would: slowly, so that polls catch it cut
// short; with corrupt YAML; with an owner beyond the owner limits. At each
// step it checks what a user sees: the owner on the flow records of a fresh
// connection, the claim records, the ebpfflow_ownership_file_reloads
// counters and the collector's log. A file caught cut short is never loaded
// (no truncated owner ID, no empty map), and a bad file keeps the last good
// owner in use, counted and logged once.
func TestOwnershipFile(t *testing.T) {
	requireRoot(t)
	path := filepath.Join(t.TempDir(), "owners.yaml")
	fileA := ownershipFile(fileOwnerA, "frontend")
	if err := os.WriteFile(path, []byte(fileA), 0o600); err != nil {
		t.Fatal(err)
	}

	sink := collectortest.StartSink(t)
	healthPort, metricsPort := collectortest.FreePort(t), collectortest.FreePort(t)
	col := collectortest.Start(t, collectortest.Options{
		Configs: []string{"../../testdata/e2e-ownershipfile.yaml"},
		Env: map[string]string{
			"FLOWATTR_E2E_HEALTH_PORT":    strconv.Itoa(healthPort),
			"FLOWATTR_E2E_METRICS_PORT":   strconv.Itoa(metricsPort),
			"FLOWATTR_E2E_SINK_PORT":      strconv.Itoa(int(sink.Addr.Port())),
			"FLOWATTR_E2E_OWNERSHIP_FILE": path,
		},
	})
	col.WaitReady(t, "127.0.0.1:"+strconv.Itoa(healthPort))
	w := &fileWatch{col: col, metricsAddr: "127.0.0.1:" + strconv.Itoa(metricsPort), sink: sink}

	// 1. The file as the collector found it at start: loaded once, and the
	// flows of a new connection carry its owner, which is claimed.
	t.Run("1_valid_file", func(t *testing.T) {
		if got := w.reloads(t); got != (reloadCounts{success: 1}) {
			t.Fatalf("reloads at start = %+v, want one success and nothing else", got)
		}
		w.checkConnection(t, fileOwnerA, "frontend")
		w.waitClaim(t, fileOwnerA)
	})

	// 2. Rewritten in place, slowly: first a prefix of the new file that
	// parses, but names a truncated owner ID, then the rest in small pieces
	// for several poll intervals. Polls that catch it midway defer it; it
	// loads once whole and settled.
	fileB := ownershipFile(fileOwnerB, "checkout")
	cut := strings.Index(fileB, fileOwnerB) + len("ownerfile-b-che")
	if m, err := localowner.ParseFile([]byte(fileB[:cut]), owners.DefaultLimits()); err != nil || len(m) == 0 {
		// The cut must be a trap a careless source would fall into.
		t.Fatalf("the file cut short must parse, to a truncated owner ID: got %v, %v", m, err)
	}
	t.Run("2_slow_rewrite_in_place", func(t *testing.T) {
		before := w.reloads(t)
		chunks := []string{fileB[:cut]}
		for rest := fileB[cut:]; rest != ""; {
			n := min(8, len(rest))
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		start := time.Now()
		writeInPlace(t, path, chunks...)
		t.Logf("rewrote the file in place in %d writes over %s", len(chunks), time.Since(start).Round(time.Millisecond))

		got := w.waitReloads(t, "the new file to load", func(r reloadCounts) bool { return r.success >= 2 })
		t.Logf("reloads: %+v before, %+v once loaded", before, got)
		if got.success != 2 || got.error != before.error {
			t.Errorf("reloads after the slow rewrite = %+v (before: %+v); want success 2 (the whole file, once) and no error", got, before)
		}
		if got.deferred <= before.deferred {
			t.Errorf("reloads{deferred} = %v, was %v: no poll caught the file midway in %s of writing", got.deferred, before.deferred, time.Duration(len(chunks)-1)*chunkGap)
		}
		w.checkConnection(t, fileOwnerB, "checkout")
		w.waitClaim(t, fileOwnerB)
	})

	// 3. Rewritten in place with corrupt YAML, and left so: one error, one
	// warning naming the file, however many polls read it; the last good
	// owner stays in use.
	corrupt := "- prefixes: [" + serverAddr + ", " + clientAddr + "]\n  id: " + fileOwnerC + "\n- prefixes: [10.0.0."
	t.Run("3_corrupt_yaml", func(t *testing.T) {
		w.checkBadFile(t, path, corrupt, "")
	})

	// 4. A well-formed file whose second entry's owner is beyond the owner
	// limits (a 4 KiB attribute value): the whole file is refused, naming
	// that entry, and its first entry's owner never shows.
	bloated := ownershipFile(fileOwnerC, "never") +
		"- prefixes: [127.77.0.9]\n" +
		"  id: ownerfile-bloated\n" +
		"  attributes:\n" +
		"    service.name: " + strings.Repeat("x", 4096) + "\n"
	t.Run("4_owner_beyond_limits", func(t *testing.T) {
		w.checkBadFile(t, path, bloated, "entries[1] (line 7)")
	})

	// Over the whole run: every flow record carried one of the owners the
	// collector loaded, and every claim named one. A truncated ID, an empty
	// map or the refused owner would show here (or as a third success).
	t.Run("all_records", func(t *testing.T) {
		flows, claims := 0, 0
		for _, rec := range sink.Records() {
			var id string
			switch rec.EventName {
			case flowschema.EventFlow:
				flows++
				id = rec.Str(flowschema.PrefixLocalOwner + flowschema.OwnerIDSuffix)
			case flowschema.EventClaim:
				claims++
				id = rec.Str(flowschema.PrefixClaimOwner + flowschema.OwnerIDSuffix)
			default:
				t.Errorf("record with event name %q: %v", rec.EventName, rec.Attrs)
				continue
			}
			if id != fileOwnerA && id != fileOwnerB {
				t.Errorf("%s record with owner ID %q, want %q or %q: %v", rec.EventName, id, fileOwnerA, fileOwnerB, rec.Attrs)
			}
		}
		if got := w.reloads(t); got.success != 2 {
			t.Errorf("reloads{success} = %v at the end, want 2 (files A and B)", got.success)
		}
		metrics := col.Metrics(t, w.metricsAddr)
		if n := collectortest.MetricSum(metrics, "otelcol_ebpfflow_flows_unowned"); n != 0 {
			t.Errorf("ebpfflow_flows_unowned = %v, want 0: some flow carried no owner", n)
		}
		t.Logf("%d flow records and %d claim records, all owned by %s or %s", flows, claims, fileOwnerA, fileOwnerB)
	})

	col.Stop(t)
}

// writeInPlace rewrites the file at path in place, as an editor or a
// careless agent does: it truncates the file, then writes the chunks one
// by one, chunkGap apart.
func writeInPlace(t *testing.T, path string, chunks ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i, c := range chunks {
		if i > 0 {
			time.Sleep(chunkGap)
		}
		if _, err := f.WriteString(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// fileWatch reads what a user of the collector sees: its metrics, its
// records at the sink, its log.
type fileWatch struct {
	col         *collectortest.Collector
	metricsAddr string
	sink        *collectortest.Sink
}

// reloadCounts are the ebpfflow_ownership_file_reloads counters by result.
type reloadCounts struct{ success, error, deferred float64 }

func (w *fileWatch) reloads(t *testing.T) reloadCounts {
	t.Helper()
	m := w.col.Metrics(t, w.metricsAddr)
	const name = "otelcol_ebpfflow_ownership_file_reloads"
	return reloadCounts{
		success:  collectortest.MetricSum(m, name, "result", localowner.ReloadSuccess),
		error:    collectortest.MetricSum(m, name, "result", localowner.ReloadError),
		deferred: collectortest.MetricSum(m, name, "result", localowner.ReloadDeferred),
	}
}

// waitReloads polls the reload counters until done holds, for at most
// fileWait, and returns them.
func (w *fileWatch) waitReloads(t *testing.T, what string, done func(reloadCounts) bool) reloadCounts {
	t.Helper()
	deadline := time.Now().Add(fileWait)
	for {
		got := w.reloads(t)
		if done(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; reloads = %+v", fileWait, what, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkConnection makes one connection between the test's addresses and
// checks that both its flow records carry the local owner id with its
// service.name.
func (w *fileWatch) checkConnection(t *testing.T, id, service string) {
	t.Helper()
	serverPort, _ := exchange(t)
	byRole := map[string]collectortest.Record{}
	deadline := time.Now().Add(fileWait)
	for len(byRole) < 2 {
		for _, rec := range w.sink.Records() {
			if rec.EventName == flowschema.EventFlow && rec.Attrs[flowschema.AttrServerPort] == int64(serverPort) {
				byRole[rec.Str(flowschema.AttrFlowRole)] = rec
			}
		}
		if len(byRole) < 2 {
			if time.Now().After(deadline) {
				t.Fatalf("flow records of the connection to port %d for roles %v after %s, want client and server", serverPort, keys(byRole), fileWait)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for role, rec := range byRole {
		if got := rec.Str(flowschema.PrefixLocalOwner + flowschema.OwnerIDSuffix); got != id {
			t.Errorf("%s flow record: %s = %q, want %q", role, flowschema.PrefixLocalOwner+flowschema.OwnerIDSuffix, got, id)
		}
		if got := rec.Str(flowschema.PrefixLocalOwner + "service.name"); got != service {
			t.Errorf("%s flow record: %s = %q, want %q", role, flowschema.PrefixLocalOwner+"service.name", got, service)
		}
	}
}

// waitClaim waits for a claim record naming owner id the holder of
// serverAddr.
func (w *fileWatch) waitClaim(t *testing.T, id string) {
	t.Helper()
	deadline := time.Now().Add(fileWait)
	for {
		for _, rec := range w.sink.Records() {
			if rec.EventName == flowschema.EventClaim && rec.Str(flowschema.AttrClaimAddress) == serverAddr &&
				rec.Str(flowschema.PrefixClaimOwner+flowschema.OwnerIDSuffix) == id {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no claim record naming %s the owner of %s after %s", id, serverAddr, fileWait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkBadFile rewrites the file at path in place with content, which must
// not load, and leaves it so: the collector counts one error and logs one
// warning naming the file and the parse error (which names entry, when
// given), over many polls, and new connections keep fileOwnerB.
func (w *fileWatch) checkBadFile(t *testing.T, path, content, entry string) {
	t.Helper()
	_, parseErr := localowner.ParseFile([]byte(content), owners.DefaultLimits())
	if parseErr == nil {
		t.Fatal("the bad file parses")
	}
	if entry != "" && !strings.Contains(parseErr.Error(), entry) {
		t.Fatalf("the bad file's error %q does not name %s", parseErr, entry)
	}
	before := w.reloads(t)
	warningsBefore := len(warnings(w.col.Output()))

	writeInPlace(t, path, content)
	w.waitReloads(t, "the bad file's load error", func(r reloadCounts) bool { return r.error > before.error })
	// However many polls read it, the same content is one error.
	time.Sleep(10 * filePoll)
	got := w.reloads(t)
	if got.error != before.error+1 || got.success != before.success {
		t.Errorf("reloads after %s of polls = %+v (before: %+v); want one more error and no success", 10*filePoll, got, before)
	}

	var logged []string
	deadline := time.Now().Add(fileWait)
	for {
		logged = warnings(w.col.Output())[warningsBefore:]
		if len(logged) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(logged) != 1 {
		t.Fatalf("logged %d warnings %q, want 1: %q", len(logged), reloadWarning, logged)
	}
	line := logged[0]
	t.Logf("the collector logged: %s", line)
	for _, want := range []string{"warn", `"path": ` + jsonString(path), `"error": ` + jsonString(parseErr.Error()), `"entries_kept": 2`} {
		if !strings.Contains(line, want) {
			t.Errorf("the warning does not contain %s", want)
		}
	}

	w.checkConnection(t, fileOwnerB, "checkout")
}

// warnings are the lines of the collector's log that report a load error
// of the ownership file.
func warnings(log string) []string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, reloadWarning) {
			out = append(out, line)
		}
	}
	return out
}

// jsonString is s as the collector's log encodes a string field.
func jsonString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		panic(fmt.Sprint(err))
	}
	return strings.TrimSuffix(b.String(), "\n")
}
