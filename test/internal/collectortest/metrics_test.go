package collectortest

import "testing"

func TestMetricSum(t *testing.T) {
	exposition := `# TYPE otelcol_processor_ownership_records_released counter
otelcol_processor_ownership_records_released_total{outcome="attributed",processor="ownership"} 3
otelcol_processor_ownership_records_released_total{outcome="timeout",processor="ownership"} 2
otelcol_processor_ownership_records_released_total{outcome="attributed",processor="ownership/2"} 4
otelcol_processor_ownership_records_released_other_total{outcome="attributed"} 100
otelcol_processor_ownership_records_released{xoutcome="attributed"} 1000
otelcol_processor_ownership_records_released 10000
otelcol_processor_ownership_records_released_totally 100000
`
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{nil, 11009},
		{[]string{"outcome", "attributed"}, 7},
		{[]string{"outcome", "attributed", "processor", "ownership"}, 3},
		{[]string{"outcome", "timeout"}, 2},
		{[]string{"outcome", "held"}, 0},
	} {
		if got := MetricSum(exposition, "otelcol_processor_ownership_records_released", c.labels...); got != c.want {
			t.Errorf("MetricSum(%v) = %v, want %v", c.labels, got, c.want)
		}
	}
}

func TestSamples(t *testing.T) {
	exposition := `# HELP flowattr_network_io_bytes_total TCP payload bytes.
# TYPE flowattr_network_io_bytes_total counter
flowattr_network_io_bytes_total{a="x",b="say \"hi\"\\"} 1500
flowattr_network_io_bytes_total{a="x"} 7
up 1
broken{a="x" 3
`
	got := Samples(exposition)
	if len(got) != 3 {
		t.Fatalf("parsed %d samples, want 3: %v", len(got), got)
	}
	if s := Series(got, "flowattr_network_io_bytes_total", map[string]string{"a": "x", "b": `say "hi"\`}); len(s) != 1 || s[0].Value != 1500 {
		t.Errorf("escaped labels: %v", s)
	}
	if s := Series(got, "flowattr_network_io_bytes_total", map[string]string{"a": "x"}); len(s) != 1 || s[0].Value != 7 {
		t.Errorf("exact label set: %v", s)
	}
	if s := Series(got, "up", map[string]string{}); len(s) != 1 || s[0].Value != 1 {
		t.Errorf("no labels: %v", s)
	}
}
