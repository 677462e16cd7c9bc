package clock

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

type call struct {
	name string
	at   time.Duration // since t0, as the clock read during the call
}

// Advance runs every callback due up to the new time, in time order (ties
// in registration order), each reading its due time, and on the caller's
// goroutine: nothing is left running when it returns.
func TestManualRunsDueCallbacksInOrder(t *testing.T) {
	defer goleak.VerifyNone(t)
	m := NewManual(t0)
	var calls []call
	record := func(name string) func() {
		return func() { calls = append(calls, call{name, m.Now().Sub(t0)}) }
	}
	m.Every(3*time.Second, record("3s"))
	m.Every(2*time.Second, record("2s"))
	m.Every(6*time.Second, record("6s"))

	m.Advance(time.Second)
	if len(calls) != 0 {
		t.Fatalf("nothing is due at 1s, got %v", calls)
	}
	m.Advance(6 * time.Second)
	want := []call{
		{"2s", 2 * time.Second},
		{"3s", 3 * time.Second},
		{"2s", 4 * time.Second},
		{"3s", 6 * time.Second},
		{"2s", 6 * time.Second},
		{"6s", 6 * time.Second},
	}
	if !slices.Equal(calls, want) {
		t.Fatalf("calls %v, want %v", calls, want)
	}
	if got := m.Now(); !got.Equal(t0.Add(7 * time.Second)) {
		t.Fatalf("Now() = %s after the callbacks, want t0+7s", got)
	}

	calls = nil
	m.Set(t0.Add(8 * time.Second))
	if want := []call{{"2s", 8 * time.Second}}; !slices.Equal(calls, want) {
		t.Fatalf("Set: calls %v, want %v", calls, want)
	}
	m.Set(t0.Add(8 * time.Second)) // the time it reads: nothing more is due
	if len(calls) != 1 {
		t.Fatalf("Set to the same time ran %v", calls[1:])
	}
}

func TestManualStop(t *testing.T) {
	m := NewManual(t0)
	var a, b atomic.Int64
	stopA := m.Every(time.Second, func() { a.Add(1) })
	m.Every(time.Second, func() { b.Add(1) })
	m.Advance(2 * time.Second)
	stopA()
	stopA() // a second call does nothing
	m.Advance(2 * time.Second)
	if a.Load() != 2 || b.Load() != 4 {
		t.Fatalf("calls a=%d b=%d, want a=2 (stopped) b=4", a.Load(), b.Load())
	}
}

// stop returns only once a callback in progress has returned.
func TestManualStopWaitsForCallback(t *testing.T) {
	m := NewManual(t0)
	entered, release := make(chan struct{}), make(chan struct{})
	stop := m.Every(time.Second, func() {
		close(entered)
		<-release
	})
	advanced := make(chan struct{})
	go func() {
		defer close(advanced)
		m.Advance(time.Second)
	}()
	<-entered
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		stop()
	}()
	select {
	case <-stopped:
		t.Fatal("stop returned while the callback was running")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-stopped
	<-advanced
	m.Advance(time.Hour) // would close entered again if still registered
}

func TestManualRefusesTimeGoingBack(t *testing.T) {
	m := NewManual(t0)
	for name, f := range map[string]func(){
		"Set":     func() { m.Set(t0.Add(-time.Nanosecond)) },
		"Advance": func() { m.Advance(-time.Nanosecond) },
		"Every":   func() { m.Every(0, func() {}) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", name)
				}
			}()
			f()
		}()
	}
}

// System calls f from a goroutine of its own, which stop ends.
func TestSystemEvery(t *testing.T) {
	defer goleak.VerifyNone(t)
	var n atomic.Int64
	stop := System{}.Every(time.Millisecond, func() { n.Add(1) })
	deadline := time.Now().Add(5 * time.Second)
	for n.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	stop()
	stop()
	after := n.Load()
	if after < 3 {
		t.Fatalf("called %d times in 5s", after)
	}
	time.Sleep(5 * time.Millisecond)
	if n.Load() != after {
		t.Fatal("called after stop returned")
	}
}
