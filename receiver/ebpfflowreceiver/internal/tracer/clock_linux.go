package tracer

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
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
// the tightest sample, so the offset is exact to about a microsecond. A
// sample is only as exact as half its width: on a busy host the thread can
// be preempted between the reads, widening every one of a few samples to a
// millisecond or more, so it samples until one is narrower than
// tightSample, at most maxClockSamples times.
func (c *bootClock) refresh() error {
	best, bestWidth := int64(0), int64(math.MaxInt64)
	for i := 0; i < maxClockSamples && bestWidth > tightSample; i++ {
		before, err := hostBootNanos()
		if err != nil {
			return err
		}
		wall := c.wallNanos()
		after, err := hostBootNanos()
		if err != nil {
			return err
		}
		b, a := before, after
		if width := a - b; width < bestWidth {
			best, bestWidth = wall-(b+(a-b)/2), width
		}
	}
	old := c.offsetNanos.Load()
	if old != 0 && bestWidth > offsetTolerance {
		return nil // no sample was exact enough to replace the offset in use
	}
	if old == 0 || best-old > offsetTolerance || old-best > offsetTolerance {
		c.offsetNanos.Store(best)
	}
	return nil
}

const offsetTolerance = int64(100 * time.Microsecond)

// A clock sample as narrow as tightSample ends refresh's sampling; it takes
// at most maxClockSamples, each a few hundred nanoseconds when the thread
// runs undisturbed.
const (
	tightSample     = int64(10 * time.Microsecond)
	maxClockSamples = 256
)

// BootTime reads the host's CLOCK_BOOTTIME, the clock of Event.StartBoot.
// If it cannot, it returns the largest Duration: a time after every event.
func BootTime() time.Duration {
	n, err := hostBootNanos()
	if err != nil {
		return math.MaxInt64
	}
	return time.Duration(n)
}

// hostBootNanos reads the host's CLOCK_BOOTTIME, that of
// bpf_ktime_get_boot_ns, in nanoseconds. In a time namespace
// (time_namespaces(7)) the clock reads the host's plus the namespace's
// offset; the BPF programs stamp events with the host's.
func hostBootNanos() (int64, error) {
	offset, err := bootOffset()
	if err != nil {
		return 0, err
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, fmt.Errorf("reading CLOCK_BOOTTIME: %w", err)
	}
	return ts.Nano() - offset, nil
}

// bootOffset is the boot clock offset of this process's time namespace, in
// nanoseconds; a process cannot change namespaces' offsets once it runs in
// one, so it is read once.
var bootOffset = sync.OnceValues(func() (int64, error) {
	data, err := os.ReadFile("/proc/self/timens_offsets")
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil // a kernel without time namespaces
	}
	if err != nil {
		return 0, fmt.Errorf("reading the time namespace's clock offsets: %w", err)
	}
	return parseBootOffset(data)
})

// parseBootOffset returns the boottime line's offset of a
// /proc/<pid>/timens_offsets file: lines of a clock (a name, or its clock
// ID), seconds and nanoseconds.
func parseBootOffset(data []byte) (int64, error) {
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) != 3 || (f[0] != "boottime" && f[0] != strconv.Itoa(unix.CLOCK_BOOTTIME)) {
			continue
		}
		secs, err1 := strconv.ParseInt(f[1], 10, 64)
		nsecs, err2 := strconv.ParseInt(f[2], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return 0, fmt.Errorf("time namespace offsets: line %q: %w", strings.TrimSpace(line), err)
		}
		return secs*int64(time.Second) + nsecs, nil
	}
	return 0, fmt.Errorf("time namespace offsets: no boottime line in %q", data)
}

// wall converts a CLOCK_BOOTTIME reading in nanoseconds to wall-clock time.
func (c *bootClock) wall(bootNanos uint64) time.Time {
	return time.Unix(0, int64(bootNanos)+c.offsetNanos.Load())
}
