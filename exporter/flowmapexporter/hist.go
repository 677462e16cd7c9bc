package flowmapexporter // import "github.com/flowattr/flowattr/exporter/flowmapexporter"

import "math"

// rttBuckets is the number of buckets of an RTT histogram: half-octave
// buckets whose upper bounds run from 1 µs to 2^23.5 µs (about 11.9 s),
// the last one unbounded. A percentile is reported as the upper bound of
// its bucket, so it overstates by less than 42%: enough to tell 1 ms from
// 10 ms, in 4 bytes a bucket.
const rttBuckets = 48

// rttUpper holds each bucket's upper bound in microseconds, inclusive:
// round(2^(i/2)), so even buckets end on powers of two.
var rttUpper = func() [rttBuckets]uint64 {
	var u [rttBuckets]uint64
	for i := range u {
		u[i] = uint64(math.Round(math.Pow(2, float64(i)/2)))
	}
	u[rttBuckets-1] = math.MaxUint64
	return u
}()

// rttBucket returns the bucket of an RTT of us microseconds.
func rttBucket(us uint64) int {
	// Twelve comparisons at most; records arrive in the hundreds of
	// thousands per second, so no floating point here.
	lo, hi := 0, rttBuckets-1
	for lo < hi {
		mid := (lo + hi) / 2
		if us <= rttUpper[mid] {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// hist counts RTT samples per bucket.
type hist [rttBuckets]uint32

func (h *hist) add(o *hist) {
	for i, n := range o {
		h[i] += n
	}
}

// percentiles returns the upper bounds of the buckets holding the 50th,
// 90th and 99th percentiles, and the number of samples; all zero without
// samples. The unbounded bucket reports the bound below it.
func (h *hist) percentiles() (p50, p90, p99, n uint64) {
	for _, c := range h {
		n += uint64(c)
	}
	if n == 0 {
		return 0, 0, 0, 0
	}
	at := func(q float64) uint64 {
		rank := uint64(math.Ceil(q * float64(n)))
		var seen uint64
		for i, c := range h {
			seen += uint64(c)
			if seen >= rank {
				if i == rttBuckets-1 {
					return rttUpper[rttBuckets-2]
				}
				return rttUpper[i]
			}
		}
		return rttUpper[rttBuckets-2]
	}
	return at(0.5), at(0.9), at(0.99), n
}
