package kube // import "github.com/flowattr/flowattr/internal/localowner/kube"

import (
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/flowattr/flowattr/internal/owners"
)

// NodeNameEnv is the environment variable that names the node when the
// configuration does not: the downward API's spec.nodeName.
const NodeNameEnv = "K8S_NODE_NAME"

// Config is the kubernetes ownership source's configuration, the
// receiver's ownership.kubernetes.
type Config struct {
	// Enabled turns the source on.
	Enabled bool `mapstructure:"enabled"`
	// NodeName is the node whose pods the source watches; empty for the
	// value of K8S_NODE_NAME.
	NodeName string `mapstructure:"node_name"`
	// Kubeconfig is the path of a kubeconfig file to reach the API server
	// with; empty for the pod's service account (in-cluster).
	Kubeconfig string `mapstructure:"kubeconfig"`
	// Services makes every Service the owner of its cluster IPs; it needs
	// list and watch on services.
	Services bool `mapstructure:"services"`
	// RestrictToPodCIDRs refuses, and counts, pod addresses outside the
	// node's spec.podCIDRs; it needs get on nodes.
	RestrictToPodCIDRs bool `mapstructure:"restrict_to_pod_cidrs"`
	// CgroupRoot is where the host's cgroup v2 hierarchy is mounted, in
	// which the source finds the cgroups of hostNetwork pods; empty for
	// the cgroup2 mount of the collector's mount namespace.
	CgroupRoot string `mapstructure:"cgroup_root"`
	// Extract adds pod labels and annotations to the pods' owners.
	Extract ExtractConfig `mapstructure:"extract"`
}

// ExtractConfig lists the pod labels and annotations to add to owners.
type ExtractConfig struct {
	Labels      []Extraction `mapstructure:"labels"`
	Annotations []Extraction `mapstructure:"annotations"`
}

// Extraction is one label or annotation added to pods' owners.
type Extraction struct {
	// Key is the label's or annotation's key.
	Key string `mapstructure:"key"`
	// TagName is the owner attribute's name; empty for
	// k8s.pod.label.<key> or k8s.pod.annotation.<key>.
	TagName string `mapstructure:"tag_name"`

	annotation bool
}

func (x Extraction) value(pod *corev1.Pod) (string, bool) {
	if x.annotation {
		v, ok := pod.Annotations[x.Key]
		return v, ok
	}
	v, ok := pod.Labels[x.Key]
	return v, ok
}

// reserved are the owner attributes the source writes itself.
var reserved = map[string]bool{
	attrPodName: true, attrPodUID: true, attrNamespaceName: true, attrNodeName: true,
	attrDeploymentName: true, attrReplicaSetName: true, attrStatefulSetName: true,
	attrDaemonSetName: true, attrJobName: true, attrCronJobName: true, attrServiceName: true,
}

const (
	// uidLength is the length of a Kubernetes UID.
	uidLength = 36
	// maxPodAttributes is the most attributes podOwner gives a pod's
	// owner before extractions.
	maxPodAttributes = 7
)

// Validate checks the configuration against the owner limits; errors name
// the setting under field (e.g. "ownership.kubernetes").
func (c *Config) Validate(field string, limits owners.Limits) error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	// Limits that every pod's owner exceeds would refuse every pod at run
	// time. A UID, the ID and k8s.pod.uid, is 36 bytes; a pod owner has 5
	// attributes, 7 with a Deployment's or CronJob's two controller
	// names; the longest name is k8s.statefulset.name. Longer pod names
	// (up to 253 bytes) refuse only their pods, counted.
	if limits.MaxIDLength < uidLength {
		errs = append(errs, fmt.Errorf("%s: ownership.owner_limits.max_id_length is %d, less than the %d bytes of a Kubernetes UID", field, limits.MaxIDLength, uidLength))
	}
	if limits.MaxValueLength < uidLength {
		errs = append(errs, fmt.Errorf("%s: ownership.owner_limits.max_value_length is %d, less than the %d bytes of a Kubernetes UID (%s)", field, limits.MaxValueLength, uidLength, attrPodUID))
	}
	if limits.MaxAttributes < maxPodAttributes {
		errs = append(errs, fmt.Errorf("%s: ownership.owner_limits.max_attributes is %d, fewer than the %d a pod's owner may have before any extraction (%s, %s, %s, %s, %s and two controller names)", field, limits.MaxAttributes, maxPodAttributes, attrPodName, attrPodUID, attrNamespaceName, attrNodeName, attrServiceName))
	}
	if limits.MaxNameLength < len(attrStatefulSetName) {
		errs = append(errs, fmt.Errorf("%s: ownership.owner_limits.max_name_length is %d, shorter than %s (%d bytes)", field, limits.MaxNameLength, attrStatefulSetName, len(attrStatefulSetName)))
	}
	seen := map[string]string{}
	check := func(kind string, i int, x Extraction, def string) {
		at := fmt.Sprintf("%s.extract.%s[%d]", field, kind, i)
		if strings.TrimSpace(x.Key) == "" {
			errs = append(errs, fmt.Errorf("%s.key: must not be empty", at))
			return
		}
		name := x.TagName
		if name == "" {
			name = def + x.Key
		}
		switch {
		case reserved[name]:
			errs = append(errs, fmt.Errorf("%s.tag_name: %q is an attribute the source sets itself; choose another name", at, name))
		case owners.CheckAttributeName(name) != nil:
			errs = append(errs, fmt.Errorf("%s.tag_name: %w", at, owners.CheckAttributeName(name)))
		case len(name) > limits.MaxNameLength:
			errs = append(errs, fmt.Errorf("%s.tag_name: %q is %d bytes, more than ownership.owner_limits.max_name_length (%d)", at, name, len(name), limits.MaxNameLength))
		case seen[name] != "":
			errs = append(errs, fmt.Errorf("%s.tag_name: %q is already the name of %s", at, name, seen[name]))
		}
		seen[name] = at
	}
	for i, x := range c.Extract.Labels {
		check("labels", i, x, "k8s.pod.label.")
	}
	for i, x := range c.Extract.Annotations {
		check("annotations", i, x, "k8s.pod.annotation.")
	}
	return errors.Join(errs...)
}

// extractions returns the extractions with their tag names filled in.
func (c *Config) extractions() []Extraction {
	out := make([]Extraction, 0, len(c.Extract.Labels)+len(c.Extract.Annotations))
	for _, x := range c.Extract.Labels {
		if x.TagName == "" {
			x.TagName = "k8s.pod.label." + x.Key
		}
		out = append(out, x)
	}
	for _, x := range c.Extract.Annotations {
		if x.TagName == "" {
			x.TagName = "k8s.pod.annotation." + x.Key
		}
		x.annotation = true
		out = append(out, x)
	}
	return out
}
