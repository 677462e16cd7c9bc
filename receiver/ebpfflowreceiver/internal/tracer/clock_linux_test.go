package tracer

import (
	"testing"
	"time"
)

// TestRefreshOutwaitsPreemption widens the first clock samples as a
// preempted thread would, by a wall-clock read that stalls between the two
// boot-clock reads: refresh must keep sampling and land within
// offsetTolerance of the true offset, not take the midpoint of a wide
// sample.
func TestRefreshOutwaitsPreemption(t *testing.T) {
	stalls := 8
	c := &bootClock{wallNanos: func() int64 {
		now := time.Now().UnixNano()
		if stalls > 0 {
			stalls--
			time.Sleep(2 * time.Millisecond) // the read happened at now, the thread resumed later
		}
		return now
	}}
	if err := c.refresh(); err != nil {
		t.Fatal(err)
	}
	checkOffset(t, c)
}

// TestRefreshKeepsOffsetWhenNoSampleIsTight: with every sample wider than
// offsetTolerance, the offset in use stays.
func TestRefreshKeepsOffsetWhenNoSampleIsTight(t *testing.T) {
	c := &bootClock{wallNanos: func() int64 { return time.Now().UnixNano() }}
	if err := c.refresh(); err != nil {
		t.Fatal(err)
	}
	good := c.offsetNanos.Load()
	c.wallNanos = func() int64 {
		time.Sleep(200 * time.Microsecond)
		return time.Now().Add(time.Hour).UnixNano()
	}
	if err := c.refresh(); err != nil {
		t.Fatal(err)
	}
	if got := c.offsetNanos.Load(); got != good {
		t.Errorf("offset moved from %d to %d on samples wider than %d ns", good, got, offsetTolerance)
	}
}

// checkOffset compares c's offset with one sampled here.
func checkOffset(t *testing.T, c *bootClock) {
	t.Helper()
	want := &bootClock{wallNanos: func() int64 { return time.Now().UnixNano() }}
	if err := want.refresh(); err != nil {
		t.Fatal(err)
	}
	if d := c.offsetNanos.Load() - want.offsetNanos.Load(); d > offsetTolerance || d < -offsetTolerance {
		t.Errorf("offset off by %v, want within %v", time.Duration(d), time.Duration(offsetTolerance))
	}
}
