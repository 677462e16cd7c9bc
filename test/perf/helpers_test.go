//go:build linux

package perf

import (
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"

	"github.com/flowattr/flowattr/internal/flowschema"
)

// TestCountRecords checks the sink's wire scan against records built with
// pdata: flows, attributed flows, claims and other records over several
// resources and scopes.
func TestCountRecords(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ld := flowBatch(0, 10, 100, 4, now.Add(-time.Minute), now)
	claimBatch(0, 7, 0, now.Add(-time.Minute), now).ResourceLogs().MoveAndAppendTo(ld.ResourceLogs())
	flows := ld.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords()
	for i := range 3 {
		flows.At(i).Attributes().PutStr(flowschema.AttrPeerAttributionStatus, "attributed")
	}
	flows.At(3).Attributes().PutStr(flowschema.AttrPeerAttributionStatus, "unattributed")
	// A second scope with a record of another kind, and one whose status is
	// not a string.
	sl := ld.ResourceLogs().At(1).ScopeLogs().AppendEmpty()
	sl.LogRecords().AppendEmpty().Body().SetStr("not a flow")
	odd := sl.LogRecords().AppendEmpty()
	odd.SetEventName(flowschema.EventFlow)
	odd.Attributes().PutInt(flowschema.AttrPeerAttributionStatus, 1)

	req, err := encode(ld)
	if err != nil {
		t.Fatal(err)
	}
	got, err := countRecords(req)
	if err != nil {
		t.Fatal(err)
	}
	if want := (recordCounts{flows: 11, attributed: 3, claims: 7, other: 1}); got != want {
		t.Errorf("countRecords = %+v, want %+v", got, want)
	}

	if _, err := countRecords(req[:len(req)-3]); err == nil {
		t.Error("countRecords accepted a truncated request")
	}
	empty, err := countRecords(nil)
	if err != nil || empty != (recordCounts{}) {
		t.Errorf("countRecords(empty) = %+v, %v", empty, err)
	}
}

func TestParseStatCPU(t *testing.T) {
	// utime 250 and stime 50 ticks; the command name has a space and a ')'.
	stat := "4242 (otel col) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 1000000 5000"
	user, system, err := parseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if user != 2500*time.Millisecond || system != 500*time.Millisecond {
		t.Errorf("parseStatCPU = %s, %s, want 2.5s, 500ms", user, system)
	}
	for _, bad := range []string{"4242 otelcol S 1", "4242 (otelcol) S 1 2 3", "4242 (c) S 1 2 3 4 5 6 7 8 9 10 x 50"} {
		if _, _, err := parseStatCPU(bad); err == nil {
			t.Errorf("parseStatCPU(%q) accepted it", bad)
		}
	}
}

func TestPromValue(t *testing.T) {
	body := `# HELP otelcol_processor_ownership_keys Addresses tracked by the store.
# TYPE otelcol_processor_ownership_keys gauge
otelcol_processor_ownership_keys_total 7
otelcol_processor_ownership_keys{otel_scope_name="x",processor="ownership"} 100000
otelcol_process_memory_rss_bytes 1.2345e+08
`
	for _, c := range []struct {
		name string
		want float64
		ok   bool
	}{
		{"otelcol_processor_ownership_keys", 100000, true},
		{"otelcol_process_memory_rss_bytes", 1.2345e8, true},
		{"otelcol_processor_ownership_ranges", 0, false},
	} {
		got, ok, err := promValue(body, c.name)
		if err != nil || got != c.want || ok != c.ok {
			t.Errorf("promValue(%s) = %v, %v, %v; want %v, %v", c.name, got, ok, err, c.want, c.ok)
		}
	}
}

// TestEncodeFlood checks the claim flood's direct encoding against the same
// claims built with pdata and flowschema.PutClaim.
func TestEncodeFlood(t *testing.T) {
	start, end := time.Unix(1_800_000_000, 0), time.Unix(1_800_000_060, 123)
	// Addresses 10.0.0.250 to 10.0.1.4: across a byte of the address.
	var enc floodEncoder
	enc.encode(0, 1000, start, end) // the buffers are reused
	raw := enc.encode(250, 261, start, end)
	req := plogotlp.NewExportRequest()
	if err := req.UnmarshalProto(raw); err != nil {
		t.Fatalf("the flood's encoding does not decode: %v", err)
	}
	var m plog.JSONMarshaler
	got, err := m.MarshalLogs(req.Logs())
	if err != nil {
		t.Fatal(err)
	}
	want, err := m.MarshalLogs(floodClaims(250, 261, start, end))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("encodeFlood decodes to\n%s\nwant (floodClaims)\n%s", got, want)
	}
	c, err := flowschema.ParseClaim(req.Logs().ResourceLogs().At(0).ScopeLogs().At(0).LogRecords().At(10))
	if err != nil || c.Address.String() != "10.0.1.4" || c.Owner.ID != "rogue-260" || !c.End.Equal(end) {
		t.Errorf("last claim parses as %+v, %v", c, err)
	}
}
