package kube // import "github.com/flowattr/flowattr/internal/localowner/kube"

import (
	"context"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/flowattr/flowattr/internal/owners"
)

// cgroupRescan is how often the cgroups of hostNetwork pods are looked for
// again, besides whenever such a pod changes: a container started since
// the last scan has flows without its pod for at most this long.
const cgroupRescan = 10 * time.Second

// cgroupIndex maps the cgroup v2 IDs of the running hostNetwork pods of
// the node, and of their containers, to the pods. The kubelet names a
// pod's cgroup after its UID (kubepods/burstable/pod<uid> with the
// cgroupfs driver, kubepods-burstable-pod<uid_with_underscores>.slice with
// systemd), and a container's cgroup lies below its pod's.
type cgroupIndex struct {
	root string
	wake chan struct{}
	mu   sync.RWMutex
	pods map[types.UID]owners.Owner
	byID map[uint64]owners.Owner
}

func newCgroupIndex(root string) *cgroupIndex {
	return &cgroupIndex{root: root, wake: make(chan struct{}, 1), pods: map[types.UID]owners.Owner{}, byID: map[uint64]owners.Owner{}}
}

func (c *cgroupIndex) lookup(id uint64) (owners.Owner, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	o, ok := c.byID[id]
	return o, ok
}

// setPod adds (running) or removes a hostNetwork pod.
func (c *cgroupIndex) setPod(uid types.UID, o owners.Owner, running bool) {
	c.mu.Lock()
	if running {
		c.pods[uid] = o
	} else {
		delete(c.pods, uid)
	}
	c.mu.Unlock()
	c.rescan()
}

// replace sets the hostNetwork pods to pods.
func (c *cgroupIndex) replace(pods map[types.UID]owners.Owner) {
	c.mu.Lock()
	c.pods = pods
	c.mu.Unlock()
	c.rescan()
}

// clear forgets every pod at once: after a watch gap no pod is known.
func (c *cgroupIndex) clear() {
	c.mu.Lock()
	c.pods = map[types.UID]owners.Owner{}
	c.byID = map[uint64]owners.Owner{}
	c.mu.Unlock()
}

func (c *cgroupIndex) rescan() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// run scans on every change and every cgroupRescan until ctx ends.
func (c *cgroupIndex) run(ctx context.Context) {
	t := time.NewTicker(cgroupRescan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.wake:
		}
		c.scan()
	}
}

// scan finds the cgroups of the known pods.
func (c *cgroupIndex) scan() {
	c.mu.RLock()
	names := make(map[string]types.UID, 2*len(c.pods))
	for uid := range c.pods {
		names["pod"+string(uid)] = uid
		names["pod"+strings.ReplaceAll(string(uid), "-", "_")] = uid
	}
	c.mu.RUnlock()
	if len(names) == 0 {
		c.mu.Lock()
		c.byID = map[uint64]owners.Owner{}
		c.mu.Unlock()
		return
	}
	found := scanCgroups(c.root, func(dir string) (types.UID, bool) { return podOfCgroup(dir, names) })
	c.mu.Lock()
	defer c.mu.Unlock()
	byID := make(map[uint64]owners.Owner, len(found))
	for id, uid := range found {
		if o, ok := c.pods[uid]; ok {
			byID[id] = o
		}
	}
	c.byID = byID
}

// podOfCgroup returns the pod whose cgroup a directory of that name is:
// pod<uid> (cgroupfs) or a systemd slice ending in -pod<uid_>.slice.
func podOfCgroup(dir string, names map[string]types.UID) (types.UID, bool) {
	name := strings.TrimSuffix(dir, ".slice")
	if i := strings.LastIndexByte(name, '-'); i >= 0 && strings.HasPrefix(name[i+1:], "pod") {
		name = name[i+1:]
	}
	uid, ok := names[name]
	return uid, ok
}
