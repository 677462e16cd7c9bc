package tracer

import (
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flowattr/flowattr/internal/testutil/discardserver"
)

// connectLoop makes connections to server from workers goroutines, each
// connecting, writing 100 bytes and closing, until n connections are made or
// stop is closed. A nonzero interval paces each worker to one connection per
// interval. It returns the number of connections made.
func connectLoop(t testing.TB, server netip.AddrPort, workers int, n int64, interval time.Duration, stop <-chan struct{}) int64 {
	var (
		made   atomic.Int64
		failed atomic.Value
		wg     sync.WaitGroup
	)
	addr := server.String()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := make([]byte, 100)
			next := time.Now()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if made.Add(1) > n {
					made.Add(-1)
					return
				}
				if interval > 0 {
					next = next.Add(interval)
					time.Sleep(time.Until(next))
				}
				c, err := net.Dial("tcp4", addr)
				if err == nil {
					_, err = c.Write(payload)
					c.Close()
				}
				if err != nil {
					made.Add(-1)
					failed.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatalf("connecting to %s: %v", addr, err)
	}
	return made.Load()
}

// processCPU is the CPU time the process has used, user and system.
func processCPU(t testing.TB) (user, system time.Duration) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// closeRun is what runCloses measured.
type closeRun struct {
	conns   int64
	elapsed time.Duration
	// records counts the closed records of the run's own connections, both
	// ends; lost, birthMapFull and missed are the tracer's counters.
	records, lost, birthMapFull, missed int64
	// unaccounted counts closes neither read nor counted lost 5 seconds
	// after the last connection.
	unaccounted int64
}

func (r closeRun) closes() int64 { return 2 * r.conns }

func (r closeRun) losses() int64 { return r.lost + r.birthMapFull + r.missed }

func (r *closeRun) add(o closeRun) {
	r.conns += o.conns
	r.elapsed += o.elapsed
	r.records += o.records
	r.lost += o.lost
	r.birthMapFull += o.birthMapFull
	r.missed += o.missed
	r.unaccounted += o.unaccounted
}

// runCloses loads a tracer with opts, makes connections to a fresh loopback
// server for duration from workers goroutines, each paced to one per
// interval if it is not zero,
// and waits until every socket closed is either read from the ring or
// counted as lost, or 5 seconds have passed. The counters also count other processes' sockets, and a
// recursion miss may be of a state change other than a close, so records +
// losses may exceed the closes; records alone may not.
func runCloses(t testing.TB, opts Options, workers int, interval, duration time.Duration) closeRun {
	t.Helper()
	server := discardserver.Start(t, "127.0.0.1:0")
	var records atomic.Int64
	tr, stopReading := readInBackground(t, opts, func(ev *Event) {
		if ev.Kind != KindClosed {
			return
		}
		if (ev.LocalAddr == server.Addr() && ev.LocalPort == server.Port()) ||
			(ev.PeerAddr == server.Addr() && ev.PeerPort == server.Port()) {
			records.Add(1)
		}
	})
	defer stopReading()
	stop := make(chan struct{})
	start := time.Now()
	timer := time.AfterFunc(duration, func() { close(stop) })
	defer timer.Stop()
	run := closeRun{conns: connectLoop(t, server, workers, math.MaxInt64, interval, stop)}
	run.elapsed = time.Since(start)

	// The server closes its ends after the loop; the ring is read at least
	// every readInterval.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := tr.Stats()
		if err != nil {
			t.Fatal(err)
		}
		run.records, run.lost, run.birthMapFull, run.missed = records.Load(), int64(st.LostEvents), int64(st.BirthMapFull), int64(st.RecursionMisses)
		if run.records+run.losses() >= run.closes() && st.RingBytesUsed == 0 {
			break
		}
		if time.Now().After(deadline) {
			// Seen with rings of a few KiB overflowing: a few dozen
			// closes in 40000 neither read nor counted.
			run.unaccounted = max(0, run.closes()-run.records-run.losses())
			break
		}
		time.Sleep(readInterval)
	}
	if run.records > run.closes() {
		t.Fatalf("%d records of %d closes: duplicates", run.records, run.closes())
	}
	return run
}
