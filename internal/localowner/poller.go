package localowner // import "github.com/flowattr/flowattr/internal/localowner"

import (
	"sync"
	"time"
)

// poller runs refresh every interval on its own goroutine and calls onChange
// when refresh reports a change, until shutdown. Sources start it from their
// Start, never before.
type poller struct {
	stop chan struct{}
	done sync.WaitGroup
}

func (p *poller) start(interval time.Duration, refresh func() bool, onChange func()) {
	p.stop = make(chan struct{})
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				if refresh() {
					onChange()
				}
			}
		}
	}()
}

// shutdown stops the goroutine and waits for it; it is a no-op when start
// was never called.
func (p *poller) shutdown() {
	if p.stop != nil {
		close(p.stop)
		p.done.Wait()
		p.stop = nil
	}
}
