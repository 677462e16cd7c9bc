package helm

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/flowattr/flowattr/internal/localowner/kube"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/test/internal/apiserver"
)

// create creates every object of objs on the API server with strict field
// validation: an unknown or duplicated field, or a value the API refuses,
// fails.
func create(t *testing.T, cfg *rest.Config, objs objects) {
	t.Helper()
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	client, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(client.Discovery()))
	for _, u := range objs.all() {
		gvk := u.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		require.NoError(t, err, "%s is not a kind the API server serves", gvk)
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if ns := u.GetNamespace(); ns != "" {
			ri = dyn.Resource(m.Resource).Namespace(ns)
		}
		_, err = ri.Create(ctx, u, metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict})
		require.NoError(t, err, "creating %s %s", u.GetKind(), u.GetName())
	}
}

func createNamespace(t *testing.T, client kubernetes.Interface, name string) {
	t.Helper()
	_, err := client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(t, err)
}

// TestChartOnAPIServer creates every object the chart renders, in each
// mode, on a real API server (kinds, fields and values checked by the
// server itself), then checks the ClusterRole there: the DaemonSet's
// service account may do exactly what the kubernetes source does, and the
// source, running as that account with the chart's configuration, lists
// and watches without being refused.
func TestChartOnAPIServer(t *testing.T) {
	_, cfg := apiserver.Start(t)
	client, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	ctx := context.Background()

	// Each release in a namespace of its own: the objects' names repeat.
	for i, sets := range [][]string{nodeDefault, nodePeers, gatewayKafka} {
		ns := fmt.Sprintf("%s-%d", namespace, i)
		createNamespace(t, client, ns)
		objs := renderIn(t, fmt.Sprintf("r%d", i), ns, sets)
		create(t, cfg, objs)
	}

	// The default release, whose account the rest of the test plays.
	createNamespace(t, client, namespace)
	objs := render(t, nodeDefault)
	create(t, cfg, objs)
	account := "system:serviceaccount:" + namespace + ":" + release + "-flowattr"

	t.Run("access", func(t *testing.T) {
		for _, tc := range []struct {
			verb, group, resource string
			allowed               bool
		}{
			{"list", "", "pods", true},
			{"watch", "", "pods", true},
			{"list", "", "services", true},
			{"watch", "", "services", true},
			{"get", "", "nodes", true},
			{"get", "", "pods", false},
			{"list", "", "nodes", false},
			{"watch", "", "nodes", false},
			{"get", "", "services", false},
			{"list", "", "secrets", false},
			{"list", "", "configmaps", false},
			{"list", "discovery.k8s.io", "endpointslices", false},
			{"list", "apps", "replicasets", false},
			{"list", "batch", "jobs", false},
			{"update", "", "pods", false},
			{"create", "", "pods", false},
		} {
			review, err := client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
				Spec: authorizationv1.SubjectAccessReviewSpec{
					User:               account,
					Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
					ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: tc.verb, Group: tc.group, Resource: tc.resource},
				},
			}, metav1.CreateOptions{})
			require.NoError(t, err)
			assert.Equalf(t, tc.allowed, review.Status.Allowed, "%s %s.%s (%s)", tc.verb, tc.resource, tc.group, review.Status.Reason)
		}
	})

	t.Run("source", func(t *testing.T) {
		testSourceAsAccount(t, cfg, client, objs, account)
	})
}

// renderIn renders the chart as release in namespace ns.
func renderIn(t *testing.T, rel, ns string, sets []string) objects {
	t.Helper()
	out, err := helm(t, append([]string{"template", rel, chartDir(t), "--namespace", ns}, setFlags(sets)...)...)
	require.NoError(t, err)
	return parse(t, out)
}

// testSourceAsAccount runs the kubernetes ownership source with the
// chart's configuration, as account (impersonated), and checks that it
// claims a pod's and a Service's addresses with nothing refused.
func testSourceAsAccount(t *testing.T, admin *rest.Config, client kubernetes.Interface, objs objects, account string) {
	ctx := context.Background()
	const node = "node-a"
	_, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: node},
		Spec:       corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24"}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = client.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	pod := runningPod(t, client, node, "shop", "10.244.1.5")
	svc, err := client.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: "default"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	// The source's settings, as the chart configures them.
	ebpf := agentConfig(t, objs)["receivers"].(map[string]any)["ebpfflow"].(map[string]any)
	var kcfg kube.Config
	require.NoError(t, confmap.NewFromStringMap(ebpf["ownership"].(map[string]any)["kubernetes"].(map[string]any)).Unmarshal(&kcfg))
	require.True(t, kcfg.Enabled && kcfg.Services && kcfg.RestrictToPodCIDRs, "the chart's defaults: %+v", kcfg)
	kcfg.CgroupRoot = t.TempDir() // the host's tree is not this test's

	as := rest.CopyConfig(admin)
	as.Impersonate = rest.ImpersonationConfig{UserName: account, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}}
	asClient, err := kubernetes.NewForConfig(as)
	require.NoError(t, err)

	core, logs := observer.New(zapcore.InfoLevel)
	var mu sync.Mutex
	var refused, gaps []string
	src, err := kube.New(kcfg, kube.Settings{
		Client: asClient, Node: node, Limits: owners.DefaultLimits(), Now: time.Now, Logger: zap.New(core),
		Telemetry: kube.Telemetry{
			AddressRefused:    func(r string) { mu.Lock(); refused = append(refused, r); mu.Unlock() },
			AttributesDropped: func(int) {},
			WatchGap:          func(r string) { mu.Lock(); gaps = append(gaps, r); mu.Unlock() },
		},
	})
	require.NoError(t, err)
	require.NoError(t, src.Start(ctx, func() {}))
	t.Cleanup(func() { _ = src.Shutdown() })

	podAddr := netip.MustParsePrefix("10.244.1.5/32")
	svcAddr := netip.PrefixFrom(netip.MustParseAddr(svc.Spec.ClusterIP), 32)
	require.Eventually(t, func() bool {
		e := src.Entries()
		return e[podAddr].ID == string(pod.UID) && e[svcAddr].ID == string(svc.UID)
	}, 10*time.Second, 20*time.Millisecond, "the pod and the Service own their addresses; entries %v; logs %v", src.Entries(), messages(logs))

	// A pod and a Service that come after the list reach the source
	// through its watches; without watch it would see them only by listing
	// again after a gap.
	pod2 := runningPod(t, client, node, "cart", "10.244.1.6")
	svc2, err := client.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "cart", Namespace: "default"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	pod2Addr := netip.MustParsePrefix("10.244.1.6/32")
	svc2Addr := netip.PrefixFrom(netip.MustParseAddr(svc2.Spec.ClusterIP), 32)
	require.Eventually(t, func() bool {
		e := src.Entries()
		return e[pod2Addr].ID == string(pod2.UID) && e[svc2Addr].ID == string(svc2.UID)
	}, 10*time.Second, 20*time.Millisecond, "the watched pod and Service own their addresses; entries %v; logs %v", src.Entries(), messages(logs))

	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, refused, "addresses refused")
	assert.Empty(t, gaps, "watch gaps")
	for _, e := range logs.All() {
		assert.NotContainsf(t, strings.ToLower(e.Message+fmt.Sprint(e.ContextMap())), "forbidden", "the source was refused: %s %v", e.Message, e.ContextMap())
	}
}

func messages(logs *observer.ObservedLogs) []string {
	var out []string
	for _, e := range logs.All() {
		out = append(out, fmt.Sprintf("%s %v", e.Message, e.ContextMap()))
	}
	return out
}

// runningPod creates a pod on node and writes its status as the kubelet
// would once its sandbox has address ip.
func runningPod(t *testing.T, client kubernetes.Interface, node, name, ip string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod, err := client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: "PodReadyToStartContainers", Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}},
	}
	pod, err = client.CoreV1().Pods("default").UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	require.NoError(t, err)
	return pod
}
