package clock

import (
	"fmt"
	"sync"
	"time"
)

// Manual is a deterministic Clock whose time moves only when Advance or Set
// moves it. It starts no goroutine: Advance and Set run every Every
// callback that falls due up to the new time, synchronously, in the order
// of their due times (callbacks due at the same time in the order Every
// registered them), each with the clock reading its due time. Safe for
// concurrent use; Advance and Set calls run one at a time.
type Manual struct {
	// moving serialises Advance and Set, so that callbacks run in time
	// order, and lets stop wait for a callback in progress.
	moving sync.Mutex

	mu    sync.Mutex
	now   time.Time
	every []*manualEvery // in registration order
}

type manualEvery struct {
	next   time.Time
	period time.Duration
	f      func()
}

var _ Clock = (*Manual)(nil)

// NewManual returns a Manual clock reading t.
func NewManual(t time.Time) *Manual {
	return &Manual{now: t}
}

// Now returns the clock's time.
func (m *Manual) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

// Every registers f to be called every d, the first time at Now()+d, by
// the Advance or Set calls that reach those times. stop waits for an
// Advance or Set in progress to return.
func (m *Manual) Every(d time.Duration, f func()) (stop func()) {
	if d <= 0 {
		panic(fmt.Sprintf("clock: Every with non-positive period %s", d))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e := &manualEvery{next: m.now.Add(d), period: d, f: f}
	m.every = append(m.every, e)
	var once sync.Once
	return func() {
		once.Do(func() {
			m.moving.Lock()
			defer m.moving.Unlock()
			m.mu.Lock()
			defer m.mu.Unlock()
			for i, x := range m.every {
				if x == e {
					m.every = append(m.every[:i], m.every[i+1:]...)
					break
				}
			}
		})
	}
}

// Advance moves the clock d forward, running the callbacks due up to the
// new time. d must not be negative. It must not be called from a callback.
func (m *Manual) Advance(d time.Duration) {
	if d < 0 {
		panic(fmt.Sprintf("clock: Advance by negative %s", d))
	}
	m.moving.Lock()
	defer m.moving.Unlock()
	m.moveTo(m.Now().Add(d))
}

// Set moves the clock to t, running the callbacks due up to t. t must not
// be before Now(). It must not be called from a callback.
func (m *Manual) Set(t time.Time) {
	m.moving.Lock()
	defer m.moving.Unlock()
	if now := m.Now(); t.Before(now) {
		panic(fmt.Sprintf("clock: Set to %s, before the clock's %s", t, now))
	}
	m.moveTo(t)
}

// moveTo runs the callbacks due up to t, one at a time, the clock reading
// each one's due time, then sets the clock to t. The caller holds moving.
func (m *Manual) moveTo(t time.Time) {
	for {
		m.mu.Lock()
		var due *manualEvery
		for _, e := range m.every {
			if !e.next.After(t) && (due == nil || e.next.Before(due.next)) {
				due = e
			}
		}
		if due == nil {
			m.now = t
			m.mu.Unlock()
			return
		}
		m.now = due.next
		due.next = due.next.Add(due.period)
		m.mu.Unlock()
		due.f()
	}
}
