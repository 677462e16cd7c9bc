// Package testclock is a wall clock and a kernel boot clock for tests: they
// move only when a test sets them, in either direction, as a stepped wall
// clock would.
package testclock // import "github.com/flowattr/flowattr/internal/testutil/testclock"

import (
	"sync"
	"time"
)

// Clock reads a wall-clock time that tests set, and a boot clock that
// reads zero at its origin and moves with the wall clock.
type Clock struct {
	origin time.Time

	mu sync.Mutex
	t  time.Time
}

// New returns a clock reading start, whose boot clock reads zero at origin.
func New(origin, start time.Time) *Clock { return &Clock{origin: origin, t: start} }

// Now returns the time last set.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Boot returns the boot clock: Now less the origin.
func (c *Clock) Boot() time.Duration { return c.Now().Sub(c.origin) }

// Set moves the clock to t, forward or back.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}
