package fleet

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// delayProxy forwards TCP connections and holds every chunk of bytes for the
// current delay before passing it on, in order: a slow network path for the
// claims of one peer, with TLS passing through end to end.
type delayProxy struct {
	l     net.Listener
	dial  func(ctx context.Context, network, addr string) (net.Conn, error)
	to    string
	delay atomic.Int64 // nanoseconds

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// startDelayProxy accepts on l and forwards to addr through dial until the
// test ends.
func startDelayProxy(t *testing.T, l net.Listener, dial func(ctx context.Context, network, addr string) (net.Conn, error), to string) *delayProxy {
	t.Helper()
	p := &delayProxy{l: l, dial: dial, to: to, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *delayProxy) setDelay(d time.Duration) { p.delay.Store(int64(d)) }

func (p *delayProxy) close() {
	_ = p.l.Close()
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// track registers c to be closed with the proxy.
func (p *delayProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns[c] = struct{}{}
	p.mu.Unlock()
}

func (p *delayProxy) serve() {
	defer p.wg.Done()
	for {
		down, err := p.l.Accept()
		if err != nil {
			return
		}
		p.track(down)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			up, err := p.dial(ctx, "tcp", p.to)
			cancel()
			if err != nil {
				_ = down.Close()
				return
			}
			p.track(up)
			var pipes sync.WaitGroup
			pipes.Add(2)
			go func() { defer pipes.Done(); p.pipe(up, down) }()
			go func() { defer pipes.Done(); p.pipe(down, up) }()
			pipes.Wait()
			_ = up.Close()
			_ = down.Close()
			p.mu.Lock()
			delete(p.conns, up)
			delete(p.conns, down)
			p.mu.Unlock()
		}()
	}
}

type chunk struct {
	due  time.Time
	data []byte
}

// pipe copies src to dst, each chunk no earlier than its arrival plus the
// delay in force when it arrived.
func (p *delayProxy) pipe(dst, src net.Conn) {
	queue := make(chan chunk, 4096)
	go func() {
		defer close(queue)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				queue <- chunk{due: time.Now().Add(time.Duration(p.delay.Load())), data: buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range queue {
		if d := time.Until(c.due); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(c.data); err != nil {
			_ = src.Close()
			for range queue { // let the reader finish
			}
			return
		}
	}
	// src ended: pass the half-close on.
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		_ = dst.Close()
	}
}
