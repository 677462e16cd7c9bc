package collectortest

import (
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/plog"
)

func TestRecordsOf(t *testing.T) {
	ld := plog.NewLogs()
	first := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords().AppendEmpty()
	first.SetEventName("flow")
	first.Attributes().PutStr("s", "x")
	first.Attributes().PutInt("n", 7)
	rl := ld.ResourceLogs().AppendEmpty()
	rl.ScopeLogs().AppendEmpty()
	rl.ScopeLogs().AppendEmpty().LogRecords().AppendEmpty().SetEventName("claim")
	at := time.Unix(1_800_000_000, 0)

	got := RecordsOf(ld, at)
	if len(got) != 2 || got[0].EventName != "flow" || got[1].EventName != "claim" {
		t.Fatalf("RecordsOf = %+v, want the flow then the claim", got)
	}
	if !got[0].Received.Equal(at) || !got[1].Received.Equal(at) {
		t.Errorf("Received = %s, %s, want %s", got[0].Received, got[1].Received, at)
	}
	r := got[0]
	if r.Str("s") != "x" || r.Int("n") != 7 {
		t.Errorf("Str(s) = %q, Int(n) = %d, want x and 7", r.Str("s"), r.Int("n"))
	}
	// Absent or of another type: the zero value.
	if r.Str("n") != "" || r.Int("s") != 0 || r.Str("missing") != "" {
		t.Errorf("mistyped or missing attributes read as %q, %d, %q", r.Str("n"), r.Int("s"), r.Str("missing"))
	}
}
