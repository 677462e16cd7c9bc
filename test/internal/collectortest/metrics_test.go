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
