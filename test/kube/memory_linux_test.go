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
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	// Workers hand their first error back: b.Fatal must run on the
	// benchmark's goroutine.
	ctx, cancel := context.WithCancelCause(b.Context())
	defer cancel(nil)
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				if err := c.runPod(ctx, "mem-"+strconv.Itoa(i), netip.AddrFrom4([4]byte{10, 244, byte(i / 250), byte(i%250 + 1)})); err != nil {
					cancel(err)
				}
			}
		})
	}
	for i := range pods {
		if ctx.Err() != nil {
			break
		}
		work <- i
	}
	close(work)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		b.Fatalf("creating the pods: %v", err)
	}
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

// runPod creates a running pod of node with address addr, returning errors
// rather than failing the benchmark (it runs on worker goroutines).
func (c *cluster) runPod(ctx context.Context, name string, addr netip.Addr) error {
	pod, err := c.client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app.kubernetes.io/name": "bench"}},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	pod.Status = runningStatus(addr, time.Now())
	_, err = c.client.CoreV1().Pods("default").UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	return err
}
