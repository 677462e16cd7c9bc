package kube

import (
	"context"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"

	"github.com/flowattr/flowattr/internal/localowner/kube"
	"github.com/flowattr/flowattr/internal/owners"
)

// BenchmarkSourceMemory creates 10000 running pods of one node on a real API
// server, then measures the heap the kubernetes source keeps once it has
// listed them (its records, tenures and client), reported as bytes/pod
// (target: at most 2 KiB).
func BenchmarkSourceMemory(b *testing.B) {
	const pods = 10000
	requireEnv(b)
	c := startCluster(b)
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				addr := netip.AddrFrom4([4]byte{10, 244, byte(i / 250), byte(i%250 + 1)})
				pod := c.createPod(b, podSpec{name: "mem-" + strconv.Itoa(i), node: node, labels: map[string]string{"app.kubernetes.io/name": "bench"}})
				c.startPod(b, pod, addr, time.Now())
			}
		})
	}
	for i := range pods {
		work <- i
	}
	close(work)
	wg.Wait()
	client, err := kubernetes.NewForConfig(c.env.Config)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		before := heap()
		src, err := kube.New(kube.Config{Enabled: true}, kube.Settings{
			Client: client, Node: node, Limits: owners.DefaultLimits(), Now: time.Now, Logger: zap.NewNop(),
			Telemetry: kube.Telemetry{AddressRefused: func(string) {}, AttributesDropped: func(int) {}, WatchGap: func(string) {}},
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := src.Start(context.Background(), func() {}); err != nil {
			b.Fatal(err)
		}
		if n := len(src.Tenures()); n != pods {
			b.Fatalf("the source holds %d addresses, want %d", n, pods)
		}
		after := heap()
		b.ReportMetric(float64(after-before)/pods, "bytes/pod")
		runtime.KeepAlive(src)
		_ = src.Shutdown()
	}
}

func heap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
