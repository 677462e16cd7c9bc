// Package helm tests the Helm chart in deploy/helm/flowattr: helm lint and
// helm template (helm is the Go tool pinned in tools/go.mod), the rendered
// objects, their collector configurations against the built collector,
// and (apiserver_test.go) the objects on a real API server.
package helm

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const (
	release   = "fa"
	namespace = "flowattr-system"
)

// repoRoot is the module's root, two levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	return root
}

// helm runs the pinned helm with args and returns its standard output, or
// its error with standard error.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := repoRoot(t)
	cmd := exec.Command("go", append([]string{"tool", "-modfile=" + filepath.Join(root, "tools", "go.mod"), "helm"}, args...)...)
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), errors.New(strings.TrimSpace(stderr.String()) + ": " + err.Error())
	}
	return stdout.String(), nil
}

func chartDir(t *testing.T) string {
	return filepath.Join(repoRoot(t), "deploy", "helm", "flowattr")
}

// setFlags turns key=value pairs into helm --set flags.
func setFlags(sets []string) []string {
	var args []string
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	return args
}

// Value sets the tests render, each a shape a user installs.
var (
	nodeDefault = []string{}
	nodePeers   = []string{
		"node.peers={10.0.0.1:14317,10.0.0.2:14317}", "tls.secretName=flowattr-tls",
		"flows.endpoint=otel-gateway.observability:4317", "flows.tls.insecure=true",
		"receiver.nat.serviceCIDRs={10.96.0.0/12}", "receiver.kubernetes.extract.labels[0].key=team",
		"ownership.senders.node-a={10.244.1.0/24,10.96.0.0/12,192.168.10.11/32}",
	}
	nodeMinimalRBAC = []string{"receiver.kubernetes.services=false", "receiver.kubernetes.restrictToPodCIDRs=false"}
	gatewayKafka    = []string{
		"mode=gateway", "tls.secretName=flowattr-tls", "gateway.kafka.brokers={kafka-0.kafka:9092,kafka-1.kafka:9092}",
		"flows.endpoint=otel-gateway.observability:4317",
	}
)

// objects is a rendered chart, by kind and name.
type objects map[string]map[string]*unstructured.Unstructured

func (o objects) get(t *testing.T, kind, name string, into any) {
	t.Helper()
	u, ok := o[kind][name]
	require.Truef(t, ok, "the chart renders no %s %s; it renders %v", kind, name, o.names())
	data, err := u.MarshalJSON()
	require.NoError(t, err)
	require.NoError(t, yaml.UnmarshalStrict(data, into), "%s %s", kind, name)
}

func (o objects) names() []string {
	var out []string
	for kind, byName := range o {
		for name := range byName {
			out = append(out, kind+"/"+name)
		}
	}
	slices.Sort(out)
	return out
}

func (o objects) all() []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, n := range o.names() {
		kind, name, _ := strings.Cut(n, "/")
		out = append(out, o[kind][name])
	}
	return out
}

// render renders the chart as the test's release in its namespace.
func render(t *testing.T, sets []string) objects {
	t.Helper()
	return renderIn(t, release, namespace, sets)
}

// parse parses the objects helm template printed.
func parse(t *testing.T, out string) objects {
	t.Helper()
	objs := objects{}
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
		}
		if m == nil {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if objs[u.GetKind()] == nil {
			objs[u.GetKind()] = map[string]*unstructured.Unstructured{}
		}
		require.NotContainsf(t, objs[u.GetKind()], u.GetName(), "%s %s rendered twice", u.GetKind(), u.GetName())
		objs[u.GetKind()][u.GetName()] = u
	}
	return objs
}

func TestChartLint(t *testing.T) {
	for name, sets := range map[string][]string{"node": nodeDefault, "node-peers": nodePeers, "gateway": gatewayKafka} {
		t.Run(name, func(t *testing.T) {
			out, err := helm(t, append([]string{"lint", "--strict", chartDir(t), "--namespace", namespace}, setFlags(sets)...)...)
			require.NoError(t, err, out)
			assert.Contains(t, out, "0 chart(s) failed")
		})
	}
}

// TestChartRBACIsLeast: the ClusterRole grants exactly what the kubernetes
// source reads (internal/localowner/kube/watch.go): list and watch on the
// node's pods, list and watch on Services when they own their cluster IPs,
// get on nodes for spec.podCIDRs; and it is bound to the DaemonSet's
// service account.
func TestChartRBACIsLeast(t *testing.T) {
	rule := func(resource string, verbs ...string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{resource}, Verbs: verbs}
	}
	for name, tc := range map[string]struct {
		sets []string
		want []rbacv1.PolicyRule
	}{
		"default":          {nodeDefault, []rbacv1.PolicyRule{rule("pods", "list", "watch"), rule("services", "list", "watch"), rule("nodes", "get")}},
		"no services/cidr": {nodeMinimalRBAC, []rbacv1.PolicyRule{rule("pods", "list", "watch")}},
		"gateway":          {gatewayKafka, []rbacv1.PolicyRule{rule("pods", "list", "watch"), rule("services", "list", "watch"), rule("nodes", "get")}},
	} {
		t.Run(name, func(t *testing.T) {
			objs := render(t, tc.sets)
			var role rbacv1.ClusterRole
			objs.get(t, "ClusterRole", release+"-flowattr", &role)
			assert.Equal(t, tc.want, role.Rules)
			assert.Len(t, objs["ClusterRole"], 1, "one ClusterRole")
			assert.Empty(t, objs["Role"], "no namespaced Role")

			var binding rbacv1.ClusterRoleBinding
			objs.get(t, "ClusterRoleBinding", release+"-flowattr", &binding)
			assert.Equal(t, rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name}, binding.RoleRef)
			var ds appsv1.DaemonSet
			objs.get(t, "DaemonSet", release+"-flowattr", &ds)
			assert.Equal(t, []rbacv1.Subject{{Kind: "ServiceAccount", Name: ds.Spec.Template.Spec.ServiceAccountName, Namespace: namespace}}, binding.Subjects)
		})
	}
}

// TestChartDaemonSetPrivileges: the node collector is not privileged; it
// has CAP_BPF and CAP_PERFMON, CAP_NET_ADMIN only for connection tracking,
// the host's cgroup tree read-only, the host network, and its node's name
// from the downward API.
func TestChartDaemonSetPrivileges(t *testing.T) {
	for name, tc := range map[string]struct {
		sets      []string
		caps      []corev1.Capability
		hostPaths []string
	}{
		"default":     {nodeDefault, []corev1.Capability{"BPF", "PERFMON"}, []string{"/sys/fs/cgroup"}},
		"nat":         {nodePeers, []corev1.Capability{"BPF", "PERFMON", "NET_ADMIN"}, []string{"/sys/fs/cgroup"}},
		"gateway":     {gatewayKafka, []corev1.Capability{"BPF", "PERFMON"}, []string{"/sys/fs/cgroup"}},
		"old kernels": {[]string{"agent.extraCapabilities={SYS_RESOURCE}", "agent.mountTracefs=true"}, []corev1.Capability{"BPF", "PERFMON", "SYS_RESOURCE"}, []string{"/sys/fs/cgroup", "/sys/kernel/tracing"}},
	} {
		t.Run(name, func(t *testing.T) {
			objs := render(t, tc.sets)
			var ds appsv1.DaemonSet
			objs.get(t, "DaemonSet", release+"-flowattr", &ds)
			pod := ds.Spec.Template.Spec
			require.Len(t, pod.Containers, 1)
			c := pod.Containers[0]
			sc := c.SecurityContext
			require.NotNil(t, sc)
			require.NotNil(t, sc.Privileged)
			assert.False(t, *sc.Privileged, "privileged")
			assert.False(t, *sc.AllowPrivilegeEscalation, "allowPrivilegeEscalation")
			assert.True(t, *sc.ReadOnlyRootFilesystem, "readOnlyRootFilesystem")
			assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
			assert.Equal(t, tc.caps, sc.Capabilities.Add)
			assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, sc.SeccompProfile.Type)
			assert.Nil(t, pod.SecurityContext, "no pod-level security context to widen the container's")
			assert.False(t, pod.HostPID, "hostPID")
			assert.False(t, pod.HostIPC, "hostIPC")
			assert.True(t, pod.HostNetwork, "hostNetwork")
			assert.Equal(t, corev1.DNSClusterFirstWithHostNet, pod.DNSPolicy)

			var hostPaths []string
			for _, v := range pod.Volumes {
				if v.HostPath != nil {
					hostPaths = append(hostPaths, v.HostPath.Path)
					for _, m := range c.VolumeMounts {
						if m.Name == v.Name {
							assert.Truef(t, m.ReadOnly, "host path %s is mounted read-write", v.HostPath.Path)
						}
					}
				}
			}
			assert.Equal(t, tc.hostPaths, hostPaths)

			env := map[string]string{}
			for _, e := range c.Env {
				require.NotNil(t, e.ValueFrom, e.Name)
				env[e.Name] = e.ValueFrom.FieldRef.FieldPath
			}
			assert.Equal(t, map[string]string{"K8S_NODE_NAME": "spec.nodeName", "K8S_POD_IP": "status.podIP"}, env)
			assert.Equal(t, release+"-flowattr", pod.ServiceAccountName)
		})
	}
	// Nothing the chart renders is privileged, in any mode.
	for _, sets := range [][]string{nodeDefault, nodePeers, gatewayKafka} {
		out, err := helm(t, append([]string{"template", release, chartDir(t)}, setFlags(sets)...)...)
		require.NoError(t, err)
		assert.NotContains(t, out, "privileged: true")
	}
}

// TestChartServices: node mode's headless Service lists every node
// collector; gateway mode's lists every gateway, and the nodes send to it
// through dns:/// round robin.
func TestChartServices(t *testing.T) {
	objs := render(t, nodePeers)
	var svc corev1.Service
	objs.get(t, "Service", release+"-flowattr", &svc)
	assert.Equal(t, corev1.ClusterIPNone, svc.Spec.ClusterIP)
	assert.Equal(t, "agent", svc.Spec.Selector["app.kubernetes.io/component"])
	assert.Equal(t, []string{"claims", "metrics"}, portNames(svc))

	objs = render(t, gatewayKafka)
	var gw corev1.Service
	objs.get(t, "Service", release+"-flowattr-gateway", &gw)
	assert.Equal(t, corev1.ClusterIPNone, gw.Spec.ClusterIP)
	assert.Equal(t, "gateway", gw.Spec.Selector["app.kubernetes.io/component"])
	var dep appsv1.Deployment
	objs.get(t, "Deployment", release+"-flowattr-gateway", &dep)
	for k, v := range gw.Spec.Selector {
		assert.Equal(t, v, dep.Spec.Template.Labels[k], "the gateway Service selects the gateways")
	}
	assert.False(t, *dep.Spec.Template.Spec.AutomountServiceAccountToken, "gateways read nothing from the API server")

	cfg := agentConfig(t, objs)
	exp := cfg["exporters"].(map[string]any)["otlp_grpc/gateways"].(map[string]any)
	assert.Equal(t, "dns:///"+release+"-flowattr-gateway."+namespace+".svc.cluster.local:4317", exp["endpoint"])
	assert.Equal(t, "round_robin", exp["balancer_name"])
}

func portNames(svc corev1.Service) []string {
	var out []string
	for _, p := range svc.Spec.Ports {
		out = append(out, p.Name)
	}
	return out
}

// agentConfig returns the node collectors' configuration.
func agentConfig(t *testing.T, objs objects) map[string]any {
	t.Helper()
	var cm corev1.ConfigMap
	objs.get(t, "ConfigMap", release+"-flowattr", &cm)
	var cfg map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &cfg))
	return cfg
}

// TestChartConfigsValidate runs the built collector's validate command on
// every configuration the chart renders, so that a key the components do
// not know, or a pipeline that does not hold together, fails here.
func TestChartConfigsValidate(t *testing.T) {
	bin := os.Getenv("FLOWATTR_COLLECTOR_BIN")
	if bin == "" {
		t.Skip("SKIPPED, NOT RUN: set FLOWATTR_COLLECTOR_BIN to the built collector (make build; make test sets it)")
	}
	for name, tc := range map[string]struct {
		sets    []string
		configs []string
	}{
		"node":       {nodeDefault, []string{release + "-flowattr"}},
		"node-peers": {nodePeers, []string{release + "-flowattr"}},
		"gateway":    {gatewayKafka, []string{release + "-flowattr", release + "-flowattr-gateway"}},
		"overrides":  {[]string{"agent.config.receivers.ebpfflow.claim_interval=5s"}, []string{release + "-flowattr"}},
	} {
		t.Run(name, func(t *testing.T) {
			objs := render(t, tc.sets)
			require.Len(t, objs["ConfigMap"], len(tc.configs))
			for _, cm := range tc.configs {
				var m corev1.ConfigMap
				objs.get(t, "ConfigMap", cm, &m)
				path := filepath.Join(t.TempDir(), "config.yaml")
				require.NoError(t, os.WriteFile(path, []byte(m.Data["config.yaml"]), 0o600))
				cmd := exec.Command(bin, "validate", "--config="+path)
				cmd.Env = append(os.Environ(), "K8S_NODE_NAME=node-a", "K8S_POD_IP=10.0.0.1", "K8S_POD_NAME=gateway-0")
				out, err := cmd.CombinedOutput()
				require.NoErrorf(t, err, "%s: validate says:\n%s\nconfig:\n%s", cm, out, m.Data["config.yaml"])
			}
		})
	}
	// The override reached the configuration.
	cfg := agentConfig(t, render(t, []string{"agent.config.receivers.ebpfflow.claim_interval=5s"}))
	assert.Equal(t, "5s", cfg["receivers"].(map[string]any)["ebpfflow"].(map[string]any)["claim_interval"])
}

// TestChartNodeConfig: node mode's configuration claims through the
// kubernetes source, sends this node's claims to every peer over mutual
// TLS, and takes the peers' claims only under senderIdentity.
func TestChartNodeConfig(t *testing.T) {
	cfg := agentConfig(t, render(t, nodePeers))
	recv := cfg["receivers"].(map[string]any)
	ebpf := recv["ebpfflow"].(map[string]any)
	assert.Equal(t, "${env:K8S_NODE_NAME}", ebpf["sender"])
	kube := ebpf["ownership"].(map[string]any)["kubernetes"].(map[string]any)
	assert.Equal(t, true, kube["enabled"])
	assert.Equal(t, "/host/sys/fs/cgroup", kube["cgroup_root"])
	assert.Equal(t, []any{"10.96.0.0/12"}, ebpf["nat"].(map[string]any)["service_cidrs"])
	grpc := recv["otlp/claims"].(map[string]any)["protocols"].(map[string]any)["grpc"].(map[string]any)
	assert.Equal(t, "${env:K8S_POD_IP}:14317", grpc["endpoint"])
	// Rotated certificates and CA are read again.
	assert.Equal(t, "1m", grpc["tls"].(map[string]any)["reload_interval"])
	assert.Equal(t, true, grpc["tls"].(map[string]any)["client_ca_file_reload"])

	procs := cfg["processors"].(map[string]any)
	assert.Equal(t, "none", procs["ownership"].(map[string]any)["sender_identity"])
	assert.Equal(t, "certificate", procs["ownership/peers"].(map[string]any)["sender_identity"])
	assert.Equal(t, "ownership", procs["ownership/peers"].(map[string]any)["store"])
	// The workload ranges are store-level settings: in both processors of
	// the store, so that a peer outside them is external at once.
	for _, p := range []string{"ownership", "ownership/peers"} {
		assert.Equal(t, defaultWorkloadCIDRs, procs[p].(map[string]any)["workload_cidrs"], p)
		assert.Equal(t, true, procs[p].(map[string]any)["workload_host_addresses"], p)
	}

	exps := cfg["exporters"].(map[string]any)
	for i, peer := range []string{"10.0.0.1:14317", "10.0.0.2:14317"} {
		e := exps["otlp_grpc/peer-"+string(rune('1'+i))].(map[string]any)
		assert.Equal(t, peer, e["endpoint"])
		assert.Equal(t, "/etc/flowattr/tls/tls.crt", e["tls"].(map[string]any)["cert_file"])
		assert.Equal(t, "1m", e["tls"].(map[string]any)["reload_interval"])
	}
	pipes := cfg["service"].(map[string]any)["pipelines"].(map[string]any)
	assert.Equal(t, []any{"otlp_grpc/peer-1", "otlp_grpc/peer-2"}, pipes["logs/claims-out"].(map[string]any)["exporters"])

	// Without peers no claim port is opened.
	cfg = agentConfig(t, render(t, nodeDefault))
	assert.NotContains(t, cfg["receivers"], "otlp/claims")
	assert.Equal(t, []any{"debug"}, cfg["service"].(map[string]any)["pipelines"].(map[string]any)["logs/flows"].(map[string]any)["exporters"])
	// normal: one line per record with its attributes, as NOTES.txt says.
	assert.Equal(t, "normal", cfg["exporters"].(map[string]any)["debug"].(map[string]any)["verbosity"])
}

// defaultWorkloadCIDRs is ownership.workloadCIDRs' default: the private
// ranges of config/default.yaml.
var defaultWorkloadCIDRs = []any{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"}

// TestChartGatewayConfig: the gateways consume the topic in a consumer
// group new at every start; their two processors sharing the store get
// the same workload ranges, and ownership.workloadCIDRs replaces them.
func TestChartGatewayConfig(t *testing.T) {
	config := func(sets []string) map[string]any {
		var cm corev1.ConfigMap
		render(t, sets).get(t, "ConfigMap", release+"-flowattr-gateway", &cm)
		var cfg map[string]any
		require.NoError(t, yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &cfg))
		return cfg
	}
	procs := func(sets []string) map[string]any { return config(sets)["processors"].(map[string]any) }
	// A consumer group new at every start: the topic is read from the
	// earliest offset after a container restart too.
	kafka := config(gatewayKafka)["receivers"].(map[string]any)["kafka/claims"].(map[string]any)
	assert.Equal(t, "flowattr-${env:K8S_POD_NAME}-${file:/proc/sys/kernel/random/uuid}", kafka["group_id"])
	assert.Equal(t, "earliest", kafka["initial_offset"])
	p := procs(gatewayKafka)
	for _, name := range []string{"ownership", "ownership/topic"} {
		assert.Equal(t, defaultWorkloadCIDRs, p[name].(map[string]any)["workload_cidrs"], name)
	}
	p = procs(append(slices.Clone(gatewayKafka), "ownership.workloadCIDRs={10.0.0.0/8,203.0.113.0/24}", "ownership.workloadHostAddresses=false"))
	for _, name := range []string{"ownership", "ownership/topic"} {
		assert.Equal(t, []any{"10.0.0.0/8", "203.0.113.0/24"}, p[name].(map[string]any)["workload_cidrs"], name)
		assert.Equal(t, false, p[name].(map[string]any)["workload_host_addresses"], name)
	}
}

// TestChartRefusesBadValues: values that cannot work fail the install with
// what to change.
func TestChartRefusesBadValues(t *testing.T) {
	for name, tc := range map[string]struct {
		sets []string
		want string
	}{
		"mode":            {[]string{"mode=mesh"}, `mode: "mesh" is not a mode; set node or gateway`},
		"peers no tls":    {[]string{"node.peers={10.0.0.1:14317}"}, "tls.secretName: mode node sends claims between collectors, which takes mutual TLS"},
		"gateway no tls":  {[]string{"mode=gateway", "gateway.kafka.brokers={k:9092}"}, "tls.secretName: mode gateway sends claims"},
		"gateway kafka":   {[]string{"mode=gateway", "tls.secretName=x"}, "gateway.kafka.brokers: mode gateway shares claims between gateways through Kafka"},
		"peer address":    {[]string{"node.peers={10.0.0.1}", "tls.secretName=x"}, `node.peers[0]: "10.0.0.1" is not host:port`},
		"sender identity": {[]string{"ownership.senderIdentity=cn"}, `ownership.senderIdentity: "cn" is not allowed`},
		"two tls sources": {[]string{"tls.secretName=x", "tls.volume.emptyDir.medium=Memory"}, "set either tls.secretName or tls.volume"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := helm(t, append([]string{"template", release, chartDir(t)}, setFlags(tc.sets)...)...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestChartExtraEnv: a secret for the flows' headers comes from a Secret
// through extraEnv, into the node DaemonSet and the gateways, and the
// ConfigMap holds only the reference to it.
func TestChartExtraEnv(t *testing.T) {
	secretEnv := []string{
		"flows.headers.api-key=${env:FLOWATTR_API_KEY}",
		"extraEnv[0].name=FLOWATTR_API_KEY",
		"extraEnv[0].valueFrom.secretKeyRef.name=backend-credentials",
		"extraEnv[0].valueFrom.secretKeyRef.key=api-key",
	}
	hasSecretEnv := func(t *testing.T, c corev1.Container) {
		t.Helper()
		for _, e := range c.Env {
			if e.Name == "FLOWATTR_API_KEY" {
				require.NotNil(t, e.ValueFrom)
				require.NotNil(t, e.ValueFrom.SecretKeyRef)
				assert.Equal(t, "backend-credentials", e.ValueFrom.SecretKeyRef.Name)
				assert.Equal(t, "api-key", e.ValueFrom.SecretKeyRef.Key)
				return
			}
		}
		t.Errorf("container %s has no FLOWATTR_API_KEY", c.Name)
	}

	objs := render(t, append(slices.Clone(nodePeers), secretEnv...))
	var ds appsv1.DaemonSet
	objs.get(t, "DaemonSet", release+"-flowattr", &ds)
	hasSecretEnv(t, ds.Spec.Template.Spec.Containers[0])
	headers := agentConfig(t, objs)["exporters"].(map[string]any)["otlp_grpc/flows"].(map[string]any)["headers"]
	assert.Equal(t, map[string]any{"api-key": "${env:FLOWATTR_API_KEY}"}, headers)

	objs = render(t, append(slices.Clone(gatewayKafka), secretEnv...))
	var dep appsv1.Deployment
	objs.get(t, "Deployment", release+"-flowattr-gateway", &dep)
	hasSecretEnv(t, dep.Spec.Template.Spec.Containers[0])
	objs.get(t, "DaemonSet", release+"-flowattr", &ds)
	hasSecretEnv(t, ds.Spec.Template.Spec.Containers[0])
}
