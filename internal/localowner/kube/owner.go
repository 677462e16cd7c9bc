package kube // import "github.com/flowattr/flowattr/internal/localowner/kube"

import (
	"net/netip"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flowattr/flowattr/internal/owners"
)

// Attribute names of pod and service owners (OpenTelemetry semantic
// conventions, k8s.* and service.name).
const (
	attrPodName         = "k8s.pod.name"
	attrPodUID          = "k8s.pod.uid"
	attrNamespaceName   = "k8s.namespace.name"
	attrNodeName        = "k8s.node.name"
	attrDeploymentName  = "k8s.deployment.name"
	attrReplicaSetName  = "k8s.replicaset.name"
	attrStatefulSetName = "k8s.statefulset.name"
	attrDaemonSetName   = "k8s.daemonset.name"
	attrJobName         = "k8s.job.name"
	attrCronJobName     = "k8s.cronjob.name"
	attrServiceName     = "service.name"
	attrK8sServiceName  = "k8s.service.name"

	// Where the semantic conventions look for service.name first.
	annotationServiceName = "resource.opentelemetry.io/service.name"
	labelInstance         = "app.kubernetes.io/instance"
	labelName             = "app.kubernetes.io/name"
	// labelPodTemplateHash is the suffix the Deployment controller gives
	// the names of its ReplicaSets, and the label it puts on their pods.
	labelPodTemplateHash = "pod-template-hash"

	// conditionReadyToStartContainers is the pod condition the kubelet
	// sets once the pod's sandbox, with its network, is up.
	conditionReadyToStartContainers corev1.PodConditionType = "PodReadyToStartContainers"
)

// cronJobName matches the names the CronJob controller gives its Jobs:
// the CronJob's name, a dash and the scheduled time in minutes since the
// epoch (8 digits until the 22nd century).
var cronJobName = regexp.MustCompile(`^(.+)-[0-9]{8}$`)

// workload returns the attributes of the workload that controls pod, found
// through its controller owner reference. A ReplicaSet's Deployment and a
// Job's CronJob are found by their controllers' naming conventions rather
// than by watching every ReplicaSet and Job of the cluster from every node
// (see docs/kubernetes.md): a ReplicaSet named <deployment>-<hash> whose pod
// carries pod-template-hash=<hash>, a Job named <cronjob>-<8 digits>.
func workload(pod *corev1.Pod) []owners.Attribute {
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return nil
	}
	switch ref.Kind {
	case "ReplicaSet":
		out := []owners.Attribute{{Name: attrReplicaSetName, Value: ref.Name}}
		if h := pod.Labels[labelPodTemplateHash]; h != "" {
			if d, ok := strings.CutSuffix(ref.Name, "-"+h); ok && d != "" {
				out = append(out, owners.Attribute{Name: attrDeploymentName, Value: d})
			}
		}
		return out
	case "StatefulSet":
		return []owners.Attribute{{Name: attrStatefulSetName, Value: ref.Name}}
	case "DaemonSet":
		return []owners.Attribute{{Name: attrDaemonSetName, Value: ref.Name}}
	case "Job":
		out := []owners.Attribute{{Name: attrJobName, Value: ref.Name}}
		if m := cronJobName.FindStringSubmatch(ref.Name); m != nil {
			out = append(out, owners.Attribute{Name: attrCronJobName, Value: m[1]})
		}
		return out
	}
	return nil
}

// serviceName is the pod's service.name in the order the semantic
// conventions recommend: the annotation, the instance label, the name
// label, then the workload's name (deployment, replicaset, statefulset,
// daemonset, cronjob, job), then the pod's.
func serviceName(pod *corev1.Pod, wl []owners.Attribute) string {
	if v := pod.Annotations[annotationServiceName]; v != "" {
		return v
	}
	if v := pod.Labels[labelInstance]; v != "" {
		return v
	}
	if v := pod.Labels[labelName]; v != "" {
		return v
	}
	for _, name := range []string{attrDeploymentName, attrReplicaSetName, attrStatefulSetName, attrDaemonSetName, attrCronJobName, attrJobName} {
		for _, a := range wl {
			if a.Name == name {
				return a.Value
			}
		}
	}
	return pod.Name
}

// ownerBuilder turns pods and services into owners within limits.
type ownerBuilder struct {
	node    string
	extract []Extraction
	limits  owners.Limits
}

// podOwner returns pod as an owner, canonical: ID the pod's UID, the
// semantic-convention attributes, then the configured extractions, each
// of which is left out (and counted in dropped) when the owner would
// exceed the limits with it. ok is false when the owner exceeds them
// without any extraction.
func (b *ownerBuilder) podOwner(pod *corev1.Pod) (o owners.Owner, dropped int, ok bool) {
	wl := workload(pod)
	attrs := make([]owners.Attribute, 0, 6+len(wl)+len(b.extract))
	attrs = append(attrs,
		owners.Attribute{Name: attrPodName, Value: pod.Name},
		owners.Attribute{Name: attrPodUID, Value: string(pod.UID)},
		owners.Attribute{Name: attrNamespaceName, Value: pod.Namespace},
		owners.Attribute{Name: attrNodeName, Value: b.node},
		owners.Attribute{Name: attrServiceName, Value: serviceName(pod, wl)},
	)
	attrs = append(attrs, wl...)
	o = owners.Owner{ID: string(pod.UID), Attributes: attrs}.Canonical()
	if b.limits.Check(o) != nil {
		return owners.Owner{}, 0, false
	}
	for _, x := range b.extract {
		v, found := x.value(pod)
		if !found {
			continue
		}
		with := owners.Owner{ID: o.ID, Attributes: append(o.Attributes[:len(o.Attributes):len(o.Attributes)], owners.Attribute{Name: x.TagName, Value: v})}.Canonical()
		if b.limits.Check(with) != nil {
			dropped++
			continue
		}
		o = with
	}
	return o, dropped, true
}

// serviceOwner returns svc as an owner: ID the Service's UID.
func (b *ownerBuilder) serviceOwner(svc *corev1.Service) (owners.Owner, bool) {
	o := owners.Owner{ID: string(svc.UID), Attributes: []owners.Attribute{
		{Name: attrK8sServiceName, Value: svc.Name},
		{Name: attrNamespaceName, Value: svc.Namespace},
	}}.Canonical()
	return o, b.limits.Check(o) == nil
}

// podAddresses returns the pod's addresses, canonical, from status.podIPs
// (status.podIP when podIPs is empty); unparsable ones are skipped.
func podAddresses(pod *corev1.Pod) []netip.Addr {
	ips := pod.Status.PodIPs
	if len(ips) == 0 && pod.Status.PodIP != "" {
		ips = []corev1.PodIP{{IP: pod.Status.PodIP}}
	}
	out := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip.IP); err == nil && a.Zone() == "" {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// serviceAddresses returns the Service's cluster IPs, every family,
// canonical; none for headless and ExternalName Services.
func serviceAddresses(svc *corev1.Service) []netip.Addr {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	out := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil && a.Zone() == "" {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// sandboxState tells whether pod's sandbox has its network, from the
// PodReadyToStartContainers condition: known false when the condition is
// false (the sandbox is gone or not up yet), and when true since when,
// rounded up to the next whole second as the API keeps these times to the
// second: the sandbox had its network no earlier than that.
func sandboxState(pod *corev1.Pod) (since time.Time, known, up bool) {
	for _, c := range pod.Status.Conditions {
		if c.Type != conditionReadyToStartContainers {
			continue
		}
		if c.Status != corev1.ConditionTrue {
			return time.Time{}, true, false
		}
		if c.LastTransitionTime.IsZero() {
			return time.Time{}, false, true
		}
		return c.LastTransitionTime.Add(time.Second).Truncate(time.Second), true, true
	}
	return time.Time{}, false, true
}

// terminal reports whether pod reached a phase in which it holds no
// address: its containers are done, and a completed Job's pod is never
// deleted by default while its address goes to other pods.
func terminal(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}
