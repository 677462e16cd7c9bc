package tracer

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// BenchmarkConnectLoopback measures connect + write + close on loopback
// without and with the tracer attached (and its ring drained, as the
// receiver does). Compare the two with benchstat; the parent logs the ratio.
func BenchmarkConnectLoopback(b *testing.B) {
	rates := map[bool]float64{}
	for _, attached := range []bool{false, true} {
		name := "attached=false"
		if attached {
			name = "attached=true"
		}
		b.Run(name, func(b *testing.B) {
			if attached {
				tr := startTracer(b, Options{})
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- tr.Read(ctx, func(*Event) {}) }()
				b.Cleanup(func() {
					cancel()
					<-done
				})
			}
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			served := make(chan struct{})
			go func() {
				defer close(served)
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						_, _ = io.Copy(io.Discard, c)
						c.Close()
					}()
				}
			}()
			addr := ln.Addr().String()
			payload := make([]byte, 100)
			b.ResetTimer()
			start := time.Now()
			for b.Loop() {
				c, err := net.Dial("tcp4", addr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write(payload); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
			rate := float64(b.N) / time.Since(start).Seconds()
			b.ReportMetric(rate, "conns/s")
			rates[attached] = rate
			b.StopTimer()
			ln.Close()
			<-served
		})
	}
	if rates[false] > 0 && rates[true] > 0 {
		b.Logf("attached/detached connection rate ratio: %.3f", rates[true]/rates[false])
	}
}

// BenchmarkDecode measures ring record bytes -> Event.
func BenchmarkDecode(b *testing.B) {
	rec := sampleRecord()
	clock := &bootClock{}
	var ev Event
	b.SetBytes(eventSize)
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if err := decodeEvent(rec, clock, &ev); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}
