package collectortest

import (
	"regexp"
	"strconv"
)

// MetricSum adds up the samples of the counter family name (with or without
// the _total suffix) in a Prometheus text exposition whose labels include
// every name="value" pair in labels. A sample without labels, a counter
// without attributes, matches when labels is empty.
func MetricSum(exposition, name string, labels ...string) float64 {
	sample := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(?:_total)?(?:\{([^}]*)\})? (\S+)$`)
	var matchers []*regexp.Regexp
	for i := 0; i+1 < len(labels); i += 2 {
		matchers = append(matchers, regexp.MustCompile(`(^|,)`+regexp.QuoteMeta(labels[i])+`="`+regexp.QuoteMeta(labels[i+1])+`"`))
	}
	var sum float64
outer:
	for _, m := range sample.FindAllStringSubmatch(exposition, -1) {
		for _, label := range matchers {
			if !label.MatchString(m[1]) {
				continue outer
			}
		}
		if v, err := strconv.ParseFloat(m[2], 64); err == nil {
			sum += v
		}
	}
	return sum
}
