package kube

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// envtestAssets is where `make envtest-assets` builds etcd and
// kube-apiserver when KUBEBUILDER_ASSETS is not set (keep in step with the
// Makefile's KUBE_VERSION and ETCD_VERSION).
func envtestAssets() string {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "flowattr", "envtest", "v1.37.2-etcd-v3.7.3")
}

// requireEnv skips the test, loudly, when the machine cannot run it: not
// root, no ip command, no kernel BTF, or no envtest binaries (`make test`
// builds them; by hand, `make envtest-assets`).
func requireEnv(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network namespaces and eBPF)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		missing = append(missing, "the ip command (iproute2; `make test-deps` installs it)")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		missing = append(missing, "kernel BTF at /sys/kernel/btf/vmlinux")
	}
	for _, bin := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(envtestAssets(), bin)); err != nil {
			missing = append(missing, fmt.Sprintf("%s in %s (run `make envtest-assets`)", bin, envtestAssets()))
		}
	}
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
	env := &envtest.Environment{BinaryAssetsDirectory: envtestAssets()}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting the API server: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
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

// addNode registers a node with the given pod CIDR.
func (c *cluster) addNode(t testing.TB, name, podCIDR string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}}}
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
	pod.Status = corev1.PodStatus{
		Phase:  corev1.PodRunning,
		PodIP:  ip.String(),
		PodIPs: []corev1.PodIP{{IP: ip.String()}},
		Conditions: []corev1.PodCondition{
			{Type: "PodReadyToStartContainers", Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(sandbox)},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(sandbox)},
		},
	}
	return c.updateStatus(t, pod)
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

// netns is a network namespace of the test: a node's pods, or a client.
type netns struct {
	name string
	dev  string
}

// newLink creates two namespaces joined by a veth pair, with addresses a
// and b (/16), deleted when the test ends.
func newLink(t testing.TB, tag string, a, b netip.Prefix) (*netns, *netns) {
	t.Helper()
	id := fmt.Sprintf("%05d", os.Getpid()%100000)
	x := &netns{name: "flowattr-kube-" + id + "-" + tag + "a", dev: "fk" + id + tag + "a"}
	y := &netns{name: "flowattr-kube-" + id + "-" + tag + "b", dev: "fk" + id + tag + "b"}
	for _, n := range []*netns{x, y} {
		if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
			t.Skipf("SKIPPED, NOT RUN: cannot create network namespace %s: %v: %s", n.name, err, out)
		}
		name := n.name
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	}
	runIP(t, "link", "add", x.dev, "netns", x.name, "type", "veth", "peer", "name", y.dev, "netns", y.name)
	for n, p := range map[*netns]netip.Prefix{x: a, y: b} {
		runIP(t, "-n", n.name, "link", "set", "lo", "up")
		runIP(t, "-n", n.name, "addr", "add", p.String(), "dev", n.dev)
		runIP(t, "-n", n.name, "link", "set", n.dev, "up")
	}
	return x, y
}

func (n *netns) addAddr(t testing.TB, a netip.Addr) {
	t.Helper()
	runIP(t, "-n", n.name, "addr", "add", a.String()+"/32", "dev", n.dev)
}

func (n *netns) delAddr(t testing.TB, a netip.Addr) {
	t.Helper()
	runIP(t, "-n", n.name, "addr", "del", a.String()+"/32", "dev", n.dev)
}

func runIP(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// in runs f on an OS thread switched into n; sockets made there stay in n.
func (n *netns) in(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd, err := unix.Open("/var/run/netns/"+n.name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

// serve accepts connections on port in n, reads each to its end and closes
// it, until the test ends.
func (n *netns) serve(t testing.TB, port int) {
	t.Helper()
	var l net.Listener
	if err := n.in(func() (err error) {
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
func (n *netns) connect(t testing.TB, addr netip.Addr, port int) (int, time.Time) {
	t.Helper()
	var c net.Conn
	start := time.Now()
	if err := n.in(func() (err error) {
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
