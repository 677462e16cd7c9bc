package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import "time"

// Clock is a time source that NewFactoryWithClock injects into the
// processor.
type Clock interface {
	Now() time.Time
}

// clock is the processor's time source. NewTicker returns nil when the clock
// offers no tickers: then nothing runs in the background, and time passes
// for the processor only when it consumes logs.
type clock interface {
	Now() time.Time
	NewTicker(d time.Duration) ticker
}

type ticker interface {
	C() <-chan time.Time
	Stop()
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTicker(d time.Duration) ticker { return realTicker{time.NewTicker(d)} }

type realTicker struct{ t *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.t.C }

func (t realTicker) Stop() { t.t.Stop() }

// injectedClock is a Clock given to NewFactoryWithClock: it has no tickers,
// even when the value given could make some, so that all time-driven work
// happens in ConsumeLogs, deterministically.
type injectedClock struct{ c Clock }

func (c injectedClock) Now() time.Time { return c.c.Now() }

func (injectedClock) NewTicker(time.Duration) ticker { return nil }
