// Package clock is the project's time source: the wall clock in production
// and a manual one in simulations and tests, behind one interface, so that
// time-driven code has one path whichever clock drives it.
package clock // import "github.com/flowattr/flowattr/internal/clock"

import (
	"sync"
	"time"
)

// Clock tells the time and calls functions periodically.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// Every calls f every d, the first time d from now, until stop is
	// called. Calls of one f never overlap. stop returns once f is not
	// running and will not be called again; it must not be called from f,
	// and later calls of it do nothing. d must be positive.
	Every(d time.Duration, f func()) (stop func())
}

// System is the wall clock: Now is time.Now, and Every calls f from a
// goroutine of its own on a time.Ticker, which drops ticks while f runs
// late.
type System struct{}

var _ Clock = System{}

// Now returns time.Now().
func (System) Now() time.Time { return time.Now() }

// Every starts a goroutine that calls f on every tick of a time.Ticker of
// period d; stop ends it.
func (System) Every(d time.Duration, f func()) (stop func()) {
	t := time.NewTicker(d)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				f()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			<-done
		})
	}
}
