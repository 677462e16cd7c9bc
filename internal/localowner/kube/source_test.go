package kube

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestFirstListDatesTenuresBackToTheSandbox(t *testing.T) {
	h := newHarness(t, Config{},
		newPod("uid-a", "a", 40.2, []string{"10.1.0.5", "fd00::5"}),
		newPod("uid-b", "b", 150, []string{"10.1.0.6"}), // the clock reads 100: not after now
		newPod("uid-c", "c", 0, []string{"10.1.0.7"}, func(p *corev1.Pod) { p.Status.Conditions = nil }),
		newPod("uid-d", "d", 30, []string{"10.1.0.8"}, func(p *corev1.Pod) { p.Spec.NodeName = "node-b" }),
	)
	h.start()
	assert.Equal(t, map[string]tenureAt{
		"10.1.0.5": {"uid-a", 41}, // rounded up: the API keeps whole seconds
		"fd00::5":  {"uid-a", 41},
		"10.1.0.6": {"uid-b", 100},
		"10.1.0.7": {"uid-c", 100}, // no condition: from when it was listed
	}, h.tenures(), "a pod of another node owns nothing here")
}

func TestWatchFollowsTheTenure(t *testing.T) {
	h := newHarness(t, Config{})
	h.start()
	w := h.watch("pods")
	assert.Empty(t, h.tenures())

	// Created without an address, then given one: from its sandbox.
	pod := newPod("uid-a", "a", 0, nil, func(p *corev1.Pod) { p.Status.Conditions = nil })
	h.clock.Set(at(101))
	w.Add(pod)
	pod = newPod("uid-a", "a", 101, []string{"10.1.0.5"})
	h.clock.Set(at(103))
	h.do(func() {
		w.Modify(pod)
	})
	assert.Equal(t, map[string]tenureAt{"10.1.0.5": {"uid-a", 102}}, h.tenures())

	// Terminating keeps the address; a new label keeps the tenure.
	pod = pod.DeepCopy()
	pod.DeletionTimestamp = &metav1.Time{Time: at(110)}
	pod.Labels = map[string]string{labelName: "web"}
	h.clock.Set(at(110))
	h.do(func() {
		w.Modify(pod)
	})
	assert.Equal(t, map[string]tenureAt{"10.1.0.5": {"uid-a", 102}}, h.tenures())
	assert.Equal(t, "web", attr(h.ownerOf("10.1.0.5"), attrServiceName))

	// Terminal phase: the address is gone, although the pod is not.
	h.clock.Set(at(112))
	h.do(func() {
		w.Modify(newPod("uid-a", "a", 101, []string{"10.1.0.5"}, withPhase(corev1.PodSucceeded)))
	})
	assert.Empty(t, h.tenures(), "a completed pod owns no address")
}

func TestAddressLeavesWithItsPod(t *testing.T) {
	h := newHarness(t, Config{}, newPod("uid-a", "a", 10, []string{"10.1.0.5", "fd00::5"}))
	h.start()
	w := h.watch("pods")

	h.clock.Set(at(105))
	h.do(func() {
		w.Modify(newPod("uid-a", "a", 10, []string{"10.1.0.5"}))
	})
	assert.Equal(t, map[string]tenureAt{"10.1.0.5": {"uid-a", 11}}, h.tenures(), "the address that left podIPs")

	h.clock.Set(at(106))
	down := newPod("uid-a", "a", 10, []string{"10.1.0.5"})
	down.Status.Conditions[0].Status = corev1.ConditionFalse
	h.do(func() {
		w.Modify(down)
	})
	assert.Empty(t, h.tenures(), "the sandbox is gone")

	h.clock.Set(at(120))
	h.do(func() {
		w.Modify(newPod("uid-a", "a", 118, []string{"10.1.0.5"}))
	})
	assert.Equal(t, map[string]tenureAt{"10.1.0.5": {"uid-a", 119}}, h.tenures(), "a new sandbox, a new tenure")

	h.clock.Set(at(130))
	h.do(func() {
		w.Delete(newPod("uid-a", "a", 118, []string{"10.1.0.5"}))
	})
	assert.Empty(t, h.tenures())
}

func TestTheNewerOfTwoPodsWithOneAddressOwnsIt(t *testing.T) {
	// B got A's address; A's deletion is not seen yet.
	h := newHarness(t, Config{},
		newPod("uid-a", "a", 10, []string{"10.1.0.5"}),
		newPod("uid-b", "b", 90, []string{"10.1.0.5"}),
	)
	h.start()
	assert.Equal(t, map[string]tenureAt{"10.1.0.5": {"uid-b", 91}}, h.tenures())
}

func TestAfterARelistTheNewerOfTwoPodsStillOwnsTheirAddress(t *testing.T) {
	// uid-z sorts after uid-b: the order is the sandboxes', not the IDs'.
	h := newHarness(t, Config{},
		newPod("uid-z", "old", 10, []string{"10.1.0.5"}),
		newPod("uid-b", "new", 90, []string{"10.1.0.5"}),
	)
	h.start()
	w := h.watch("pods")
	h.drainChanges()
	require.Equal(t, map[string]tenureAt{"10.1.0.5": {"uid-b", 91}}, h.tenures())

	h.clock.Set(at(200))
	h.do(func() { w.Stop() })
	h.do(func() { h.watch("pods") }) // relisted at 200: both tenures start then
	assert.Equal(t, map[string]tenureAt{"10.1.0.5": {"uid-b", 200}}, h.tenures())
}

func TestAPodSeenAfterARelistTakesTheAddressFromTheOlderOne(t *testing.T) {
	h := newHarness(t, Config{}, newPod("uid-z", "old", 10, []string{"10.1.0.5"}))
	h.start()
	w := h.watch("pods")
	h.drainChanges()
	h.clock.Set(at(200))
	h.do(func() { w.Stop() })
	h.do(func() { w = h.watch("pods") }) // relisted at 200: uid-z since 200

	// uid-b's sandbox (198) is older than the relist, younger than uid-z's.
	h.clock.Set(at(201))
	h.do(func() {
		w.Add(newPod("uid-b", "new", 197, []string{"10.1.0.5"}))
		w.Add(newPod("uid-c", "other", 197, []string{"10.1.0.9"})) // a change to publish either way
	})
	assert.Equal(t, tenureAt{"uid-b", 198}, h.tenures()["10.1.0.5"])
}

func TestTwoPodsWithOneAddressInNoKnownOrderOwnNeither(t *testing.T) {
	noCondition := func(p *corev1.Pod) { p.Status.Conditions = nil }
	h := newHarness(t, Config{},
		newPod("uid-a", "a", 40, []string{"10.1.0.5"}),
		newPod("uid-b", "b", 40.5, []string{"10.1.0.5"}), // the same second
		newPod("uid-c", "c", 0, []string{"10.1.0.6"}, noCondition),
		newPod("uid-d", "d", 0, []string{"10.1.0.6"}, noCondition),
		newPod("uid-e", "e", 0, []string{"10.1.0.7"}, noCondition),
		newPod("uid-f", "f", 90, []string{"10.1.0.7"}), // uid-e may have got it later
		newPod("uid-g", "g", 0, []string{"10.1.0.8"}, noCondition),
	)
	h.start()
	w := h.watch("pods")
	assert.Equal(t, map[string]tenureAt{"10.1.0.8": {"uid-g", 100}}, h.tenures())

	h.clock.Set(at(110))
	h.do(func() {
		w.Delete(newPod("uid-a", "a", 40, []string{"10.1.0.5"}))
	})
	assert.Equal(t, map[string]tenureAt{"10.1.0.5": {"uid-b", 41}, "10.1.0.8": {"uid-g", 100}}, h.tenures(),
		"once the other lets it go")
}

func TestAnOlderPodLosesItsAddressToANewerRefusedOne(t *testing.T) {
	h := newHarness(t, Config{},
		newPod("uid-a", "old", 10, []string{"10.1.0.5"}),
		newPod("uid-b", "new", 90, []string{"10.1.0.5"}, withOversizedServiceName),
	)
	h.start()
	assert.Empty(t, h.tenures())
	assert.Equal(t, 1, h.count(h.refused, RefusedOwnerTooLarge))
}

func TestWatchGapStopsEveryOwnerUntilListedAgain(t *testing.T) {
	h := newHarness(t, Config{}, newPod("uid-a", "a", 10, []string{"10.1.0.5"}))
	h.start()
	w := h.watch("pods")
	h.drainChanges()
	assert.Equal(t, map[string]tenureAt{"10.1.0.5": {"uid-a", 11}}, h.tenures())

	// The watch ends; meanwhile pod b got its sandbox at 150.
	require.NoError(t, h.client.Tracker().Add(newPod("uid-b", "b", 150, []string{"10.1.0.6"})))
	h.clock.Set(at(200))
	h.do(func() {
		w.Stop()
	})
	assert.Empty(t, h.tenures(), "nothing is claimed past the end of the watch")
	assert.Equal(t, 1, h.count(h.gaps, ResourcePods))

	h.do(func() { h.watch("pods") }) // listed again at 200
	assert.Equal(t, map[string]tenureAt{"10.1.0.5": {"uid-a", 200}, "10.1.0.6": {"uid-b", 200}}, h.tenures(),
		"after a gap, claims resume from the list, even for pods whose sandbox is older")
}

func TestWatchErrorIsAGap(t *testing.T) {
	h := newHarness(t, Config{}, newPod("uid-a", "a", 10, []string{"10.1.0.5"}))
	h.start()
	w := h.watch("pods")
	h.drainChanges()
	h.clock.Set(at(150))
	h.do(func() {
		w.Error(&metav1.Status{Status: metav1.StatusFailure, Code: 410, Reason: metav1.StatusReasonExpired, Message: "too old resource version"})
	})
	assert.Empty(t, h.tenures())
	h.do(func() { h.watch("pods") })
	assert.Equal(t, map[string]tenureAt{"10.1.0.5": {"uid-a", 150}}, h.tenures())
}

func TestHostNetworkPodsOwnNoAddress(t *testing.T) {
	h := newHarness(t, Config{}, newPod("uid-h", "h", 10, []string{"192.0.2.10"}, withHostNetwork))
	h.start()
	assert.Empty(t, h.tenures(), "the node owns its address")
}

func TestRestrictToPodCIDRs(t *testing.T) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}, Spec: corev1.NodeSpec{PodCIDRs: []string{"10.1.0.0/24", "fd00::/64"}}}
	h := newHarness(t, Config{RestrictToPodCIDRs: true}, n,
		newPod("uid-a", "a", 10, []string{"10.1.0.5", "fd00::5"}),
		newPod("uid-b", "b", 10, []string{"10.2.0.5", "fd01::5"}),
	)
	h.start()
	w := h.watch("pods")
	assert.Equal(t, map[string]tenureAt{"10.1.0.5": {"uid-a", 11}, "fd00::5": {"uid-a", 11}}, h.tenures())
	assert.Equal(t, 2, h.count(h.refused, RefusedOutsidePodCIDRs))

	h.clock.Set(at(105))
	h.do(func() {
		w.Modify(newPod("uid-b", "b", 10, []string{"10.2.0.5", "fd01::5"}, withLabels("x", "y")))
		w.Modify(newPod("uid-a", "a", 10, []string{"10.1.0.5"}))
	})
	assert.Equal(t, 2, h.count(h.refused, RefusedOutsidePodCIDRs), "an address is refused once, not at every update")
}

// withOversizedServiceName gives the pod a service.name beyond the default
// owner limits.
func withOversizedServiceName(p *corev1.Pod) {
	p.Annotations = map[string]string{annotationServiceName: strings.Repeat("x", 2000)}
}

func TestAPodWhoseOwnerOutgrowsTheLimitsLosesItsAddresses(t *testing.T) {
	h := newHarness(t, Config{}, newPod("uid-a", "a", 10, []string{"10.1.0.5"}))
	h.start()
	w := h.watch("pods")
	require.Equal(t, map[string]tenureAt{"10.1.0.5": {"uid-a", 11}}, h.tenures())

	h.clock.Set(at(110))
	h.do(func() {
		w.Modify(newPod("uid-a", "a", 10, []string{"10.1.0.5"}, withOversizedServiceName))
	})
	assert.Empty(t, h.tenures(), "never an owner with no ID")
	assert.Equal(t, 1, h.count(h.refused, RefusedOwnerTooLarge))

	h.clock.Set(at(111))
	h.do(func() {
		w.Modify(newPod("uid-a", "a", 10, []string{"10.1.0.5"}, withOversizedServiceName, withLabels("x", "y")))
		w.Add(newPod("uid-c", "c", 10, []string{"10.1.0.9"})) // a change to publish
	})
	assert.Equal(t, 1, h.count(h.refused, RefusedOwnerTooLarge), "counted once while refused")
}

func TestAPodWhoseOwnerFitsAgainClaimsItsAddresses(t *testing.T) {
	h := newHarness(t, Config{}, newPod("uid-a", "a", 10, []string{"10.1.0.5"}, withOversizedServiceName))
	h.start()
	w := h.watch("pods")
	require.Empty(t, h.tenures())
	require.Equal(t, 1, h.count(h.refused, RefusedOwnerTooLarge))

	h.clock.Set(at(110))
	h.do(func() {
		w.Modify(newPod("uid-a", "a", 10, []string{"10.1.0.5"}))
		w.Add(newPod("uid-c", "c", 10, []string{"10.1.0.9"})) // a change to publish either way
	})
	assert.Equal(t, tenureAt{"uid-a", 11}, h.tenures()["10.1.0.5"], "held since its sandbox")
	assert.Equal(t, "a", attr(h.ownerOf("10.1.0.5"), attrServiceName))
}

func TestRestrictToPodCIDRsWithoutTheNodeRefusesAll(t *testing.T) {
	h := newHarness(t, Config{RestrictToPodCIDRs: true}, newPod("uid-a", "a", 10, []string{"10.1.0.5"}))
	h.start()
	assert.Empty(t, h.tenures())
	assert.Equal(t, 1, h.count(h.refused, RefusedOutsidePodCIDRs))
}

// newService returns a Service of namespace shop created at created
// seconds with the given cluster IPs.
func newService(uid, name string, created float64, ips ...string) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: typesUID(uid), CreationTimestamp: metav1.NewTime(at(created))},
		Spec:       corev1.ServiceSpec{ClusterIPs: ips},
	}
	if len(ips) > 0 {
		s.Spec.ClusterIP = ips[0]
	}
	return s
}

func TestServicesOwnTheirClusterIPs(t *testing.T) {
	h := newHarness(t, Config{Services: true}, newService("uid-s", "cart", 20, "10.96.0.10", "fd00:96::10"), newService("uid-h", "headless", 20, "None"))
	h.start()
	w := h.watch("services")
	assert.Equal(t, map[string]tenureAt{"10.96.0.10": {"uid-s", 100}, "fd00:96::10": {"uid-s", 100}}, h.tenures(),
		"listed: from the list, as the Service may have got them after its creation")
	o := h.ownerOf("10.96.0.10")
	assert.Equal(t, "cart", attr(o, attrK8sServiceName))
	assert.Equal(t, "shop", attr(o, attrNamespaceName))

	h.clock.Set(at(130))
	h.do(func() {
		w.Add(newService("uid-t", "pay", 129.2, "10.96.0.11"))
	})
	assert.Equal(t, tenureAt{"uid-t", 130}, h.tenures()["10.96.0.11"], "seen in the watch: from its creation, rounded up")

	h.clock.Set(at(140))
	h.do(func() {
		w.Delete(newService("uid-s", "cart", 20, "10.96.0.10", "fd00:96::10"))
	})
	assert.Equal(t, map[string]tenureAt{"10.96.0.11": {"uid-t", 130}}, h.tenures())
}

func TestAClusterIPAServiceGetsLaterIsItsFromThen(t *testing.T) {
	ext := newService("uid-s", "cart", 20)
	ext.Spec.Type, ext.Spec.ExternalName = corev1.ServiceTypeExternalName, "cart.example.com"
	h := newHarness(t, Config{Services: true}, ext)
	h.start()
	w := h.watch("services")
	require.Empty(t, h.tenures())

	h.clock.Set(at(120))
	h.do(func() {
		w.Modify(newService("uid-s", "cart", 20, "10.96.0.77")) // ExternalName to ClusterIP
		w.Add(newService("uid-t", "pay", 109.5, "10.96.0.78"))
	})
	assert.Equal(t, map[string]tenureAt{"10.96.0.77": {"uid-s", 120}, "10.96.0.78": {"uid-t", 110}}, h.tenures())

	h.clock.Set(at(130))
	h.do(func() {
		w.Modify(newService("uid-t", "pay", 109.5, "10.96.0.78", "fd00:96::78")) // to dual stack
	})
	assert.Equal(t, map[string]tenureAt{"10.96.0.77": {"uid-s", 120}, "10.96.0.78": {"uid-t", 110}, "fd00:96::78": {"uid-t", 130}}, h.tenures())
}
