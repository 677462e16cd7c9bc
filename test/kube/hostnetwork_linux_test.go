package kube

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/test/internal/collectortest"
)

// cgroup2Mount returns where the cgroup v2 hierarchy is mounted (the
// source's default cgroup_root), or skips the test.
func cgroup2Mount(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fields := strings.Fields(s.Text()); len(fields) > 2 && fields[2] == "cgroup2" {
			return fields[1]
		}
	}
	t.Skip("SKIPPED, NOT RUN: no cgroup v2 hierarchy mounted")
	return ""
}

// TestHostNetworkPod runs a hostNetwork pod's process in a kubepods-like
// cgroup named after the pod's UID, on the node's address, connecting to
// a peer. Its flow record names the pod as the local workload, found from
// the socket's cgroup, while no claim ever gives the node's address to the
// pod.
func TestHostNetworkPod(t *testing.T) {
	requireEnv(t)
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("SKIPPED, NOT RUN: bash is missing")
	}
	root := cgroup2Mount(t)
	c := startCluster(t)
	c.addNode(t, podCIDR)
	nodeNS, clientNS := newLink(t, "h", nodeNet, clientNet)
	clientNS.serve(t, port)
	pod := c.createPod(t, podSpec{name: "host", node: node, hostNetwork: true})
	uid := string(pod.UID)
	// The source's cgroup_root is a cgroup of the test's, holding the
	// kubelet's cgroupfs layout: kubepods/<qos>/pod<uid>/<container>.
	cgroupRoot := filepath.Join(root, fmt.Sprintf("flowattr-kube-%d", os.Getpid()))
	ctr := filepath.Join(cgroupRoot, "kubepods", "besteffort", "pod"+uid, "app")
	if err := os.MkdirAll(ctr, 0o755); err != nil {
		t.Skipf("SKIPPED, NOT RUN: cannot create a cgroup under %s: %v", root, err)
	}
	t.Cleanup(func() {
		for d := ctr; strings.HasPrefix(d, cgroupRoot); d = filepath.Dir(d) {
			_ = os.Remove(d)
		}
	})
	t.Setenv("FLOWATTR_E2E_CGROUP_ROOT", cgroupRoot)
	sink := collectortest.StartSink(t)
	startCollector(t, c.kubeconfig, sink)

	// A hostNetwork pod's address is the node's.
	c.startPod(t, pod, nodeNet.Addr(), time.Now())
	time.Sleep(edgeMargin) // the source indexes the pod's cgroups at its change

	// The process joins the pod's cgroup, then connects from the node's
	// network namespace.
	script := fmt.Sprintf(`echo $$ > %s/cgroup.procs && exec ip netns exec %s bash -c 'exec 3<>/dev/tcp/%s/%d && echo hello >&3'`,
		ctr, nodeNS.NS, clientNet.Addr(), port)
	if out, err := exec.Command("bash", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("connecting from the pod's cgroup: %v: %s", err, out)
	}

	var rec collectortest.Record
	deadline := time.Now().Add(waitLong)
	for rec.Attrs == nil && time.Now().Before(deadline) {
		for _, r := range sink.Records() {
			if r.EventName == flowschema.EventFlow && r.Str(flowschema.AttrFlowRole) == flowschema.RoleClient &&
				r.Str(flowschema.AttrNetworkLocalAddress) == nodeNet.Addr().String() && r.Str(flowschema.AttrNetworkPeerAddress) == clientNet.Addr().String() {
				rec = r
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if rec.Attrs == nil {
		t.Fatalf("no flow record of the pod's connection within %s", waitLong)
	}
	if got := rec.Str(flowschema.PrefixLocalWorkload + flowschema.OwnerIDSuffix); got != uid {
		t.Errorf("the pod's connection names local workload %q, want the pod %s", got, uid)
	}
	if got := rec.Str(flowschema.PrefixLocalWorkload + "k8s.pod.name"); got != "host" {
		t.Errorf("the pod's connection names local workload pod %q, want host", got)
	}
	if got := rec.Str(flowschema.PrefixLocalOwner + flowschema.OwnerIDSuffix); got == uid {
		t.Errorf("the pod's connection names the pod as the owner of the node's address")
	}
	for _, r := range claims(sink, nodeNet.Addr(), time.Time{}) {
		if owner := r.Str(flowschema.PrefixClaimOwner + flowschema.OwnerIDSuffix); owner == uid {
			t.Errorf("the hostNetwork pod claimed the node's address %s", nodeNet.Addr())
		}
	}
}
