package collectortest

import (
	"maps"
	"regexp"
	"strconv"
	"strings"
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

// Sample is one sample line of a Prometheus text exposition.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Samples parses the sample lines of a Prometheus text exposition, skipping
// comments and lines it cannot read.
func Samples(exposition string) []Sample {
	var out []Sample
	for line := range strings.Lines(exposition) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		s := Sample{Labels: map[string]string{}}
		rest := line
		i := strings.IndexAny(rest, "{ ")
		if i < 0 {
			continue
		}
		s.Name, rest = rest[:i], rest[i:]
		if rest[0] == '{' {
			var ok bool
			if rest, ok = parseLabels(rest[1:], s.Labels); !ok {
				continue
			}
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		s.Value = v
		out = append(out, s)
	}
	return out
}

// parseLabels reads `name="value",...}` into labels and returns what
// follows the closing brace.
func parseLabels(s string, labels map[string]string) (string, bool) {
	for {
		s = strings.TrimLeft(s, ", ")
		if strings.HasPrefix(s, "}") {
			return s[1:], true
		}
		eq := strings.Index(s, `="`)
		if eq < 0 {
			return "", false
		}
		name := s[:eq]
		s = s[eq+2:]
		var value strings.Builder
		for {
			if s == "" {
				return "", false
			}
			c := s[0]
			s = s[1:]
			if c == '"' {
				break
			}
			if c == '\\' && s != "" {
				switch s[0] {
				case 'n':
					value.WriteByte('\n')
				default:
					value.WriteByte(s[0])
				}
				s = s[1:]
				continue
			}
			value.WriteByte(c)
		}
		labels[name] = value.String()
	}
}

// Series returns the samples named name whose labels are exactly labels.
func Series(samples []Sample, name string, labels map[string]string) []Sample {
	var out []Sample
	for _, s := range samples {
		if s.Name == name && maps.Equal(s.Labels, labels) {
			out = append(out, s)
		}
	}
	return out
}
