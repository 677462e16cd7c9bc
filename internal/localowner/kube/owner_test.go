package kube

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flowattr/flowattr/internal/owners"
)

func typesUID(s string) types.UID { return types.UID(s) }

func attr(o owners.Owner, name string) string {
	for _, a := range o.Attributes {
		if a.Name == name {
			return a.Value
		}
	}
	return ""
}

func TestPodOwnerWorkloadAndServiceName(t *testing.T) {
	b := ownerBuilder{node: node, limits: owners.DefaultLimits()}
	for _, tc := range []struct {
		name string
		opts []podOpt
		want map[string]string
	}{
		{
			"deployment",
			[]podOpt{withController("ReplicaSet", "web-7d4b9c"), withLabels(labelPodTemplateHash, "7d4b9c")},
			map[string]string{attrReplicaSetName: "web-7d4b9c", attrDeploymentName: "web", attrServiceName: "web"},
		},
		{
			"replicaset of no deployment",
			[]podOpt{withController("ReplicaSet", "web-7d4b9c")},
			map[string]string{attrReplicaSetName: "web-7d4b9c", attrDeploymentName: "", attrServiceName: "web-7d4b9c"},
		},
		{"statefulset", []podOpt{withController("StatefulSet", "db")}, map[string]string{attrStatefulSetName: "db", attrServiceName: "db"}},
		{"daemonset", []podOpt{withController("DaemonSet", "agent")}, map[string]string{attrDaemonSetName: "agent", attrServiceName: "agent"}},
		{
			"cronjob",
			[]podOpt{withController("Job", "backup-29436180")},
			map[string]string{attrJobName: "backup-29436180", attrCronJobName: "backup", attrServiceName: "backup"},
		},
		{"job", []podOpt{withController("Job", "migrate-42")}, map[string]string{attrJobName: "migrate-42", attrCronJobName: "", attrServiceName: "migrate-42"}},
		{"bare pod", nil, map[string]string{attrServiceName: "p"}},
		{"name label", []podOpt{withController("StatefulSet", "db"), withLabels(labelName, "postgres")}, map[string]string{attrServiceName: "postgres"}},
		{"instance label first", []podOpt{withLabels(labelName, "postgres", labelInstance, "orders-db")}, map[string]string{attrServiceName: "orders-db"}},
		{"annotation first", []podOpt{withLabels(labelInstance, "orders-db"), func(p *corev1.Pod) {
			p.Annotations = map[string]string{annotationServiceName: "orders"}
		}}, map[string]string{attrServiceName: "orders"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, dropped, ok := b.podOwner(newPod("uid-p", "p", 10, nil, tc.opts...))
			assert.True(t, ok)
			assert.Zero(t, dropped)
			assert.Equal(t, "uid-p", o.ID)
			assert.Equal(t, "uid-p", attr(o, attrPodUID))
			assert.Equal(t, "p", attr(o, attrPodName))
			assert.Equal(t, "shop", attr(o, attrNamespaceName))
			assert.Equal(t, node, attr(o, attrNodeName))
			for k, v := range tc.want {
				assert.Equal(t, v, attr(o, k), k)
			}
			assert.Equal(t, o, o.Canonical())
			// Validate's least limits (a UID's length, the longest
			// name) take every pod of short names.
			assert.LessOrEqual(t, len(o.Attributes), maxPodAttributes)
			least := owners.Limits{MaxIDLength: uidLength, MaxAttributes: maxPodAttributes, MaxNameLength: len(attrStatefulSetName), MaxValueLength: uidLength}
			require.NoError(t, (&Config{Enabled: true}).Validate("k", least))
			_, _, ok = (&ownerBuilder{node: node, limits: least}).podOwner(newPod(strings.Repeat("u", uidLength), "p", 10, nil, tc.opts...))
			assert.True(t, ok, "refused under the least limits Validate accepts")
		})
	}
}

func TestPodOwnerExtractsWithinLimits(t *testing.T) {
	cfg := Config{Enabled: true, Extract: ExtractConfig{
		Labels:      []Extraction{{Key: "team"}, {Key: "big"}, {Key: "tier", TagName: "tier"}},
		Annotations: []Extraction{{Key: "owner"}},
	}}
	limits := owners.DefaultLimits()
	limits.MaxValueLength = 64
	b := ownerBuilder{node: node, limits: limits, extract: cfg.extractions()}
	pod := newPod("uid-p", "p", 10, nil, withLabels("team", "payments", "big", strings.Repeat("x", 65), "tier", "gold"), func(p *corev1.Pod) {
		p.Annotations = map[string]string{"owner": "alice"}
	})
	o, dropped, ok := b.podOwner(pod)
	assert.True(t, ok)
	assert.Equal(t, 1, dropped, "the label beyond max_value_length")
	assert.Equal(t, "payments", attr(o, "k8s.pod.label.team"))
	assert.Equal(t, "gold", attr(o, "tier"))
	assert.Equal(t, "alice", attr(o, "k8s.pod.annotation.owner"))
	assert.Empty(t, attr(o, "k8s.pod.label.big"))

	limits.MaxValueLength = 4 // the pod's own attributes do not fit
	b.limits = limits
	_, _, ok = b.podOwner(pod)
	assert.False(t, ok)
}

func TestConfigValidate(t *testing.T) {
	limits := owners.DefaultLimits()
	cfg := Config{Enabled: true, Extract: ExtractConfig{
		Labels:      []Extraction{{Key: ""}, {Key: "a", TagName: attrServiceName}, {Key: "b", TagName: "x"}, {Key: "c", TagName: "id"}},
		Annotations: []Extraction{{Key: "d", TagName: "x"}},
	}}
	err := cfg.Validate("ownership.kubernetes", limits)
	for _, want := range []string{
		"ownership.kubernetes.extract.labels[0].key: must not be empty",
		`ownership.kubernetes.extract.labels[1].tag_name: "service.name" is an attribute the source sets itself`,
		`ownership.kubernetes.extract.labels[3].tag_name: attribute name "id" is reserved`,
		`ownership.kubernetes.extract.annotations[0].tag_name: "x" is already the name of ownership.kubernetes.extract.labels[2]`,
	} {
		assert.ErrorContains(t, err, want)
	}
	limits.MaxIDLength = 20
	limits.MaxValueLength = 35
	limits.MaxAttributes = 6
	limits.MaxNameLength = 19
	err = (&Config{Enabled: true}).Validate("ownership.kubernetes", limits)
	for _, want := range []string{
		"ownership.kubernetes: ownership.owner_limits.max_id_length is 20, less than the 36 bytes of a Kubernetes UID",
		"ownership.kubernetes: ownership.owner_limits.max_value_length is 35, less than the 36 bytes of a Kubernetes UID (k8s.pod.uid)",
		"ownership.kubernetes: ownership.owner_limits.max_attributes is 6, fewer than the 7 a pod's owner may have",
		"ownership.kubernetes: ownership.owner_limits.max_name_length is 19, shorter than k8s.statefulset.name (20 bytes)",
	} {
		assert.ErrorContains(t, err, want)
	}
	assert.NoError(t, (&Config{}).Validate("ownership.kubernetes", limits), "disabled: nothing to check")
}

func TestPodOfCgroup(t *testing.T) {
	names := map[string]types.UID{"pod0b1c-2d": "0b1c-2d", "pod0b1c_2d": "0b1c-2d"}
	for dir, want := range map[string]types.UID{
		"pod0b1c-2d":                          "0b1c-2d",
		"kubepods-burstable-pod0b1c_2d.slice": "0b1c-2d",
		"kubepods-pod0b1c_2d.slice":           "0b1c-2d",
		"cri-containerd-abc.scope":            "",
		"pod0b1c-2e":                          "",
	} {
		uid, ok := podOfCgroup(dir, names)
		assert.Equal(t, want != "", ok, dir)
		assert.Equal(t, want, uid, dir)
	}
}
