package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import "time"

// clock is the processor's time source, injectable so that tests control
// max_future, max_wait and the periodic work.
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
