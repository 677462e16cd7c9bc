package fleetsim

// span is a time range [s, e] (inclusive, processor-frame nanoseconds)
// covered by claims of one workload.
type span struct {
	owner int64
	s, e  int64
}

// coverageOracle knows, per address, which claims had been delivered to the
// processor so far, merged per owner. It answers the scoring question "could
// the processor have known the true owner?" independently of the store under
// test: no merge gap, no skew guard, exact containment only.
type coverageOracle struct {
	spans     [][]span // by address index, sorted by s
	retention int64
}

func newCoverageOracle(ips int, retention int64) *coverageOracle {
	return &coverageOracle{spans: make([][]span, ips), retention: retention}
}

// add records a delivered claim of owner over [s, e] on address ip at
// processor time now, and forgets spans that ended before now-retention (the
// processor refuses and prunes those too).
func (o *coverageOracle) add(ip int32, owner int64, s, e, now int64) {
	horizon := now - o.retention
	if e < horizon {
		return
	}
	list := o.spans[ip]
	for merged := true; merged; {
		merged = false
		kept := list[:0]
		for _, sp := range list {
			switch {
			case sp.e < horizon:
			case sp.owner == owner && sp.s <= e && sp.e >= s:
				s, e = min(s, sp.s), max(e, sp.e)
				merged = true
			default:
				kept = append(kept, sp)
			}
		}
		list = kept
	}
	i := len(list)
	for i > 0 && list[i-1].s > s {
		i--
	}
	list = append(list, span{})
	copy(list[i+1:], list[i:])
	list[i] = span{owner: owner, s: s, e: e}
	o.spans[ip] = list
}

// covered reports whether a delivered claim of owner covers t on ip.
func (o *coverageOracle) covered(ip int32, owner int64, t int64) bool {
	for _, sp := range o.spans[ip] {
		if sp.owner == owner && sp.s <= t && t <= sp.e {
			return true
		}
	}
	return false
}
