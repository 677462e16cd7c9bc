package tracer

import (
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// bootClock converts bpf_ktime_get_boot_ns timestamps (CLOCK_BOOTTIME, which
// unlike CLOCK_MONOTONIC keeps counting across suspend) to wall-clock time.
// The offset between the two clocks changes when the wall clock is stepped
// or slewed, so Read refreshes it every refreshEvery and Active on every
// pass; changes below offsetTolerance are sampling jitter and ignored, so
// that the Start of one connection is the same in its interim and final
// records.
type bootClock struct {
	offsetNanos atomic.Int64 // wall clock minus CLOCK_BOOTTIME
	// wallNanos reads the wall clock (time.Now), and refreshEvery is how
	// often Read refreshes the offset; tests change both before Read.
	wallNanos    func() int64
	refreshEvery time.Duration
}

// clockRefreshInterval is how long after a step of the wall clock records
// may still carry times on the old scale.
const clockRefreshInterval = time.Second

func newBootClock() (*bootClock, error) {
	c := &bootClock{wallNanos: func() int64 { return time.Now().UnixNano() }, refreshEvery: clockRefreshInterval}
	if err := c.refresh(); err != nil {
		return nil, err
	}
	return c, nil
}

// refresh samples the wall clock between two CLOCK_BOOTTIME reads and keeps
// the tightest of a few samples, so the offset is exact to about a
// microsecond.
func (c *bootClock) refresh() error {
	best, bestWidth := int64(0), int64(math.MaxInt64)
	for range 5 {
		var before, after unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &before); err != nil {
			return fmt.Errorf("reading CLOCK_BOOTTIME: %w", err)
		}
		wall := c.wallNanos()
		if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &after); err != nil {
			return fmt.Errorf("reading CLOCK_BOOTTIME: %w", err)
		}
		b, a := before.Nano(), after.Nano()
		if width := a - b; width < bestWidth {
			best, bestWidth = wall-(b+(a-b)/2), width
		}
	}
	if old := c.offsetNanos.Load(); old == 0 || best-old > offsetTolerance || old-best > offsetTolerance {
		c.offsetNanos.Store(best)
	}
	return nil
}

const offsetTolerance = int64(100 * time.Microsecond)

// BootTime reads CLOCK_BOOTTIME, the clock of Event.StartBoot. It returns 0
// if the clock cannot be read, which a loaded Tracer rules out: New reads it.
func BootTime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// wall converts a CLOCK_BOOTTIME reading in nanoseconds to wall-clock time.
func (c *bootClock) wall(bootNanos uint64) time.Time {
	return time.Unix(0, int64(bootNanos)+c.offsetNanos.Load())
}
