//go:build linux

package ebpfflowreceiver

import (
	"errors"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"go.uber.org/zap"
)

// BenchmarkConntrackLookup measures one query of the collector's connection
// tracking over netlink, the cost a client flow to nat.service_cidrs adds
// (one per connection). It asks for a connection that does not exist: the
// kernel's hash lookup costs the same either way. Needs root.
func BenchmarkConntrackLookup(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("connection tracking needs CAP_NET_ADMIN")
	}
	t, err := openConntrack()
	if err != nil {
		b.Skipf("connection tracking unavailable: %v", err)
	}
	b.Cleanup(func() { _ = t.Close() })
	local, peer := netip.MustParseAddrPort("10.0.0.1:40000"), netip.MustParseAddrPort("10.96.0.10:80")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := t.Translation(local, peer); !errors.Is(err, errNoConntrackEntry) {
			b.Fatal(err)
		}
	}
}

// BenchmarkNATPendingMemory measures the heap an answer waiting for its
// connection's close costs: max_connections of them is the most the
// receiver keeps.
func BenchmarkNATPendingMemory(b *testing.B) {
	const n = 100_000
	backend := netip.MustParseAddrPort("10.244.1.5:8080")
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r := newNATResolver(nil, nil, n, zap.NewNop(), func(string, string) {}, func() {})
		for i := range n {
			r.keep(uint64(i+1), backend)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/answer")
		runtime.KeepAlive(r)
	}
}
