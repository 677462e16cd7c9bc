package kube

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/flowattr/flowattr/internal/localowner"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/internal/testutil/testclock"
)

const node = "node-a"

var t0 = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)

func at(seconds float64) time.Time { return t0.Add(time.Duration(seconds * float64(time.Second))) }

// podOpt changes a test pod.
type podOpt func(*corev1.Pod)

// newPod returns a running pod of node with the given UID, name and
// addresses, whose sandbox had its network at sandbox seconds (the API
// keeps whole seconds).
func newPod(uid, name string, sandbox float64, ips []string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: types.UID(uid)},
		Spec:       corev1.PodSpec{NodeName: node},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning,
			Conditions: []corev1.PodCondition{{
				Type: conditionReadyToStartContainers, Status: corev1.ConditionTrue,
				LastTransitionTime: metav1.NewTime(at(sandbox)),
			}},
		},
	}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func withPhase(ph corev1.PodPhase) podOpt { return func(p *corev1.Pod) { p.Status.Phase = ph } }

func withHostNetwork(p *corev1.Pod) { p.Spec.HostNetwork = true }

func withLabels(kv ...string) podOpt {
	return func(p *corev1.Pod) {
		if p.Labels == nil {
			p.Labels = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			p.Labels[kv[i]] = kv[i+1]
		}
	}
}

func withController(kind, name string) podOpt {
	return func(p *corev1.Pod) {
		yes := true
		p.OwnerReferences = append(p.OwnerReferences, metav1.OwnerReference{Kind: kind, Name: name, Controller: &yes})
	}
}

// harness runs a Source against a fake clientset whose watches the test
// feeds: each watch the source opens is sent on watches.
type harness struct {
	t       *testing.T
	clock   *testclock.Clock
	client  *fake.Clientset
	src     *Source
	watches map[string]chan *watch.FakeWatcher
	changed chan struct{}

	mu       sync.Mutex
	refused  map[string]int
	dropped  int
	gaps     map[string]int
	lastSeen map[string]*watch.FakeWatcher
}

func newHarness(t *testing.T, cfg Config, objs ...runtime.Object) *harness {
	t.Helper()
	h := &harness{
		t:        t,
		clock:    testclock.New(t0, at(100)),
		client:   fake.NewClientset(objs...),
		watches:  map[string]chan *watch.FakeWatcher{"pods": make(chan *watch.FakeWatcher, 8), "services": make(chan *watch.FakeWatcher, 8)},
		changed:  make(chan struct{}, 64),
		refused:  map[string]int{},
		gaps:     map[string]int{},
		lastSeen: map[string]*watch.FakeWatcher{},
	}
	for res, ch := range h.watches {
		h.client.PrependWatchReactor(res, func(k8stesting.Action) (bool, watch.Interface, error) {
			w := watch.NewFakeWithChanSize(16, false)
			ch <- w
			return true, w, nil
		})
	}
	cfg.Enabled = true
	src, err := New(cfg, Settings{
		Client: h.client, Node: node, Limits: owners.DefaultLimits(), Now: h.clock.Now, Logger: zap.NewNop(),
		Telemetry: Telemetry{
			AddressRefused:    func(r string) { h.mu.Lock(); h.refused[r]++; h.mu.Unlock() },
			AttributesDropped: func(n int) { h.mu.Lock(); h.dropped += n; h.mu.Unlock() },
			WatchGap:          func(r string) { h.mu.Lock(); h.gaps[r]++; h.mu.Unlock() },
		},
	})
	require.NoError(t, err)
	h.src = src
	return h
}

// start starts the source: its first lists happen at the clock's time.
func (h *harness) start() {
	h.t.Helper()
	require.NoError(h.t, h.src.Start(context.Background(), func() { h.changed <- struct{}{} }))
	h.t.Cleanup(func() { require.NoError(h.t, h.src.Shutdown()) })
}

// watch returns the source's current watch of res, waiting for it.
func (h *harness) watch(res string) *watch.FakeWatcher {
	h.t.Helper()
	select {
	case w := <-h.watches[res]:
		h.lastSeen[res] = w
		return w
	case <-time.After(10 * time.Second):
		h.t.Fatalf("the source opened no watch of %s", res)
		return nil
	}
}

// do runs action, which changes what the source sees, and waits for the
// source to publish the change.
func (h *harness) do(action func()) {
	h.t.Helper()
	h.drainChanges()
	action()
	select {
	case <-h.changed:
	case <-time.After(10 * time.Second):
		h.t.Fatal("the source published no change")
	}
}

// drainChanges forgets the changes published so far.
func (h *harness) drainChanges() {
	for {
		select {
		case <-h.changed:
		default:
			return
		}
	}
}

// tenures returns the source's tenures as address -> (owner ID, since).
func (h *harness) tenures() map[string]tenureAt {
	out := map[string]tenureAt{}
	for p, t := range h.src.Tenures() {
		out[p.Addr().String()] = tenureAt{t.Owner.ID, t.Since.Sub(t0).Seconds()}
	}
	return out
}

type tenureAt struct {
	owner string
	since float64
}

func (h *harness) count(m map[string]int, k string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return m[k]
}

// ownerOf returns the owner of addr's tenure.
func (h *harness) ownerOf(addr string) owners.Owner {
	h.t.Helper()
	t, ok := h.src.Tenures()[netip.PrefixFrom(netip.MustParseAddr(addr), netip.MustParseAddr(addr).BitLen())]
	require.True(h.t, ok, "no tenure of %s", addr)
	return t.Owner
}

var _ localowner.TimedSource = (*Source)(nil)
