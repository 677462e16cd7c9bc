package kube

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flowattr/flowattr/internal/owners"
)

// TestCgroupIndexFindsHostNetworkPods lays out kubepods cgroups of both
// drivers as directories and checks that the index maps each container's
// directory inode (its cgroup ID) to its pod, and nothing else.
func TestCgroupIndexFindsHostNetworkPods(t *testing.T) {
	root := t.TempDir()
	mk := func(rel string) uint64 {
		p := filepath.Join(root, rel)
		require.NoError(t, os.MkdirAll(p, 0o755))
		st, err := os.Stat(p)
		require.NoError(t, err)
		return st.Sys().(*syscall.Stat_t).Ino
	}
	cgroupfs := mk("kubepods/burstable/pod1111-aa/ctr1")
	systemd := mk("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod2222_bb.slice/cri-containerd-x.scope")
	other := mk("kubepods/burstable/pod3333-cc/ctr1")
	host := mk("system.slice/sshd.service")

	c := newCgroupIndex(root)
	c.replace(map[types.UID]owners.Owner{"1111-aa": {ID: "1111-aa"}, "2222-bb": {ID: "2222-bb"}})
	c.scan()
	for id, want := range map[uint64]string{cgroupfs: "1111-aa", systemd: "2222-bb", other: "", host: ""} {
		o, ok := c.lookup(id)
		assert.Equal(t, want != "", ok, want)
		assert.Equal(t, want, o.ID)
	}

	c.setPod("1111-aa", owners.Owner{}, false)
	c.scan()
	_, ok := c.lookup(cgroupfs)
	assert.False(t, ok, "a pod that stopped is forgotten")
}
