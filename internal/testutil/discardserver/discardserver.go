// Package discardserver runs a TCP server for the receiver's and the
// tracer's tests and benchmarks: connections whose life the kernel side
// traces, with nothing but the connection itself to measure.
//
// Like everything under internal/testutil it is test support: only
// _test.go files import it (golangci-lint's depguard enforces this).
package discardserver // import "github.com/flowattr/flowattr/internal/testutil/discardserver"

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
)

// Start listens on addr (IPv4), reads every accepted connection to EOF and
// closes it. The server and its connections end at tb's cleanup. It returns
// the address it listens on.
func Start(tb testing.TB, addr string) netip.AddrPort {
	tb.Helper()
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		tb.Fatal(err)
	}
	var conns sync.WaitGroup
	served := make(chan struct{})
	go func() {
		defer close(served)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				_, _ = io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		<-served
		conns.Wait()
	})
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
