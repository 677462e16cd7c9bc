package kube

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/flowattr/flowattr/test/internal/apiserver"
	"github.com/flowattr/flowattr/test/internal/netns"
)

// requireEnv skips the test, loudly, when the machine cannot run it: not
// root, no ip command, no kernel BTF, or no envtest binaries (`make test`
// builds them; by hand, `make envtest-assets`).
func requireEnv(t testing.TB) {
	t.Helper()
	missing := append(netns.Missing(), apiserver.Missing()...)
	if len(missing) > 0 {
		t.Skipf("SKIPPED, NOT RUN: this Kubernetes test needs %s", strings.Join(missing, ", "))
	}
}

// cluster is a real kube-apiserver and etcd, and the test playing the
// kubelet of its nodes.
type cluster struct {
	env        *envtest.Environment
	client     kubernetes.Interface
	kubeconfig string // a kubeconfig file for the collectors
}

func startCluster(t testing.TB) *cluster {
	t.Helper()
	env, cfg := apiserver.Start(t)
	user, err := env.ControlPlane.AddUser(envtest.User{Name: "flowattr-collector", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{env: env, client: client, kubeconfig: path}
	ctx := context.Background()
	if _, err := client.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the default service account: %v", err)
	}
	return c
}

// addNode registers the tests' node with the given pod CIDR.
func (c *cluster) addNode(t testing.TB, podCIDR string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}, Spec: corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}}}
	if _, err := c.client.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// podSpec is a pod as the test creates it.
type podSpec struct {
	name        string
	node        string
	hostNetwork bool
	owner       *metav1.OwnerReference
	labels      map[string]string
}

// createPod creates a pod bound to its node, as the scheduler would.
func (c *cluster) createPod(t testing.TB, p podSpec) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: "default", Labels: p.labels},
		Spec: corev1.PodSpec{
			NodeName: p.node, HostNetwork: p.hostNetwork,
			Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}},
		},
	}
	if p.owner != nil {
		pod.OwnerReferences = []metav1.OwnerReference{*p.owner}
	}
	created, err := c.client.CoreV1().Pods("default").Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return created
}

// startPod plays the kubelet: the sandbox got its network at sandbox (the
// API keeps whole seconds), the pod runs with address ip. It returns when
// the API server has stored the status.
func (c *cluster) startPod(t testing.TB, pod *corev1.Pod, ip netip.Addr, sandbox time.Time) *corev1.Pod {
	t.Helper()
	pod = pod.DeepCopy()
	pod.Status = runningStatus(ip, sandbox)
	return c.updateStatus(t, pod)
}

// runningStatus is the status the kubelet writes for a running pod with
// address ip whose sandbox got its network at sandbox.
func runningStatus(ip netip.Addr, sandbox time.Time) corev1.PodStatus {
	return corev1.PodStatus{
		Phase:  corev1.PodRunning,
		PodIP:  ip.String(),
		PodIPs: []corev1.PodIP{{IP: ip.String()}},
		Conditions: []corev1.PodCondition{
			{Type: "PodReadyToStartContainers", Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(sandbox)},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(sandbox)},
		},
	}
}

// finishPod plays the kubelet of a completed pod: phase Succeeded, its
// addresses still listed, never deleted (as for a Job's pod).
func (c *cluster) finishPod(t testing.TB, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	pod = pod.DeepCopy()
	pod.Status.Phase = corev1.PodSucceeded
	return c.updateStatus(t, pod)
}

func (c *cluster) updateStatus(t testing.TB, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	got, err := c.client.CoreV1().Pods(pod.Namespace).UpdateStatus(context.Background(), pod, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// deletePod deletes a pod at once, as the kubelet's final delete does.
func (c *cluster) deletePod(t testing.TB, pod *corev1.Pod) {
	t.Helper()
	zero := int64(0)
	if err := c.client.CoreV1().Pods(pod.Namespace).Delete(context.Background(), pod.Name,
		metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &pod.UID}}); err != nil {
		t.Fatal(err)
	}
}

// space is a network namespace of the test, by its end of a veth pair:
// a node's pods, or a client.
type space struct{ netns.End }

// newLink creates two namespaces joined by a veth pair, with addresses a
// and b (/16), deleted when the test ends.
func newLink(t testing.TB, tag string, a, b netip.Prefix) (*space, *space) {
	t.Helper()
	id := fmt.Sprintf("%05d", os.Getpid()%100000)
	x := &space{netns.End{NS: "flowattr-kube-" + id + "-" + tag + "a", Dev: "fk" + id + tag + "a", Prefix: a}}
	y := &space{netns.End{NS: "flowattr-kube-" + id + "-" + tag + "b", Dev: "fk" + id + tag + "b", Prefix: b}}
	netns.Pair(t, x.End, y.End)
	return x, y
}

// serve accepts connections on port in n, reads each to its end and closes
// it, until the test ends.
func (n *space) serve(t testing.TB, port int) {
	t.Helper()
	var l net.Listener
	if err := netns.In(n.NS, func() (err error) {
		l, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 512)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// connect makes one short connection from n to addr:port and returns its
// client port and when it started.
func (n *space) connect(t testing.TB, addr netip.Addr, port int) (int, time.Time) {
	t.Helper()
	var c net.Conn
	start := time.Now()
	if err := netns.In(n.NS, func() (err error) {
		c, err = net.DialTimeout("tcp", netip.AddrPortFrom(addr, uint16(port)).String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("connecting to %s:%d: %v", addr, port, err)
	}
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	local := c.LocalAddr().(*net.TCPAddr).Port
	_ = c.Close()
	return local, start
}
