// Package kube is the kubernetes ownership source: the pods of this node
// own their addresses, and Services their cluster IPs, each from when it
// provably held the address until it provably stopped (see Source).
package kube // import "github.com/flowattr/flowattr/internal/localowner/kube"

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/flowattr/flowattr/internal/localowner"
	"github.com/flowattr/flowattr/internal/owners"
)

// Reasons for refusing an address, the "reason" attribute of the
// receiver's ebpfflow_kubernetes_addresses_refused.
const (
	// RefusedOutsidePodCIDRs: a pod address outside the node's
	// spec.podCIDRs, with restrict_to_pod_cidrs.
	RefusedOutsidePodCIDRs = "outside_pod_cidrs"
	// RefusedOwnerTooLarge: the pod or Service as an owner exceeds
	// ownership.owner_limits even without extracted attributes.
	RefusedOwnerTooLarge = "owner_too_large"
)

// Resources the source watches, the "resource" attribute of the receiver's
// ebpfflow_kubernetes_watch_gaps.
const (
	ResourcePods     = "pods"
	ResourceServices = "services"
)

// Telemetry counts what the source refuses, leaves out or misses; the
// receiver passes its counters. Every field is required.
type Telemetry struct {
	// AddressRefused counts an address refused, once per pod or Service,
	// address and reason while it stays refused.
	AddressRefused func(reason string)
	// AttributesDropped counts extracted attributes left out of an owner
	// because it would exceed the owner limits with them.
	AttributesDropped func(n int)
	// WatchGap counts a watch of resource that ended: claims of its
	// owners stop then and resume once it is listed again.
	WatchGap func(resource string)
}

// Settings are what the source takes besides its configuration.
type Settings struct {
	// Client reaches the API server (NewClient in production).
	Client kubernetes.Interface
	// Node is the node whose pods the source watches.
	Node string
	// Limits bound every owner (the receiver's ownership.owner_limits).
	Limits owners.Limits
	// Now reads the wall clock that tenures are dated on.
	Now       func() time.Time
	Logger    *zap.Logger
	Telemetry Telemetry
}

// initialSyncTimeout bounds how long Start waits for the first lists.
const initialSyncTimeout = 10 * time.Second

// Source is the kubernetes ownership source, a localowner.TimedSource.
//
// A pod owns each address of its status.podIPs from when it provably had
// it: when the source first saw the address on the pod or, no earlier, when
// the pod's sandbox had its network (the PodReadyToStartContainers
// condition, rounded up to the second), so that a collector that restarts
// covers the time before it started. It stops owning it when the source
// sees the pod deleted, in a terminal phase (Succeeded, Failed: completed
// Job pods are not deleted, and their address goes to other pods), with
// that condition false, or without the address. A terminating pod keeps
// its addresses until then. hostNetwork pods own no address: they share
// the node's (see Workload). Two pods that list one address at once (the
// deletion of the one that left is not seen yet) yield the one whose
// sandbox had its network last, also after a relist, so that the processor
// sees both owners for the time they overlap rather than the old one for
// the new one's. When that order is not known (sandboxes of the same
// second, a pod without the condition) neither owns the address until one
// of them lets it go: the address is unattributed rather than misattributed.
//
// A Service owns its cluster IPs until its deletion: from its creation when
// the watch shows it created, else from when the source first saw each.
//
// The source lists, then watches from the list's resource version. When a
// watch ends, for whatever reason (the API server restarted or closed it,
// 410 Gone, a broken connection), the source has not observed what came
// after: the owners of that resource stop at once, and are published again
// when it has been listed anew, from then on, however long they held
// their addresses before. Only a pod seen new, on the first list after
// Start or in a watch, has its tenures dated back to when its sandbox had
// its network.
type Source struct {
	cfg     Config
	set     Settings
	builder ownerBuilder
	cgroups *cgroupIndex

	mu       sync.Mutex
	pods     map[types.UID]*podRecord
	services map[types.UID]*serviceRecord
	listed   map[string]bool // resources listed once since Start
	podCIDRs []netip.Prefix  // the node's, with restrict_to_pod_cidrs
	tenures  map[netip.Prefix]localowner.Tenure
	entries  map[netip.Prefix]owners.Owner
	onChange func()

	cancel context.CancelFunc
	done   sync.WaitGroup
}

// podRecord is what the source keeps of a pod: no API object.
type podRecord struct {
	owner       owners.Owner
	hostNetwork bool
	// running: the pod's sandbox is up and it is not in a terminal phase
	// (and its owner is within the limits).
	running bool
	addrs   []heldAddr // none when the pod holds no address
}

// serviceRecord is what the source keeps of a Service.
type serviceRecord struct {
	owner owners.Owner
	addrs []heldAddr
}

// heldAddr is an address and when its tenure started.
type heldAddr struct {
	addr  netip.Addr
	since time.Time
	// acquired is when the owner got the address, zero when not known; it
	// orders owners that list one address, as since cannot: after a relist
	// every since is the list's time.
	acquired time.Time
	refused  string // why it is refused (counted), "" when it is not
}

var _ localowner.TimedSource = (*Source)(nil)

// New returns the source; it does no I/O until Start.
func New(cfg Config, set Settings) (*Source, error) {
	if set.Node == "" {
		return nil, errors.New("the node name is empty")
	}
	root := cfg.CgroupRoot
	if root == "" {
		root = cgroup2Mount()
	}
	return &Source{
		cfg:      cfg,
		set:      set,
		builder:  ownerBuilder{node: set.Node, extract: cfg.extractions(), limits: set.Limits},
		cgroups:  newCgroupIndex(root),
		pods:     map[types.UID]*podRecord{},
		services: map[types.UID]*serviceRecord{},
		listed:   map[string]bool{},
		tenures:  map[netip.Prefix]localowner.Tenure{},
		entries:  map[netip.Prefix]owners.Owner{},
	}, nil
}

// Tenures implements localowner.TimedSource.
func (s *Source) Tenures() map[netip.Prefix]localowner.Tenure {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tenures
}

// Entries implements localowner.Source.
func (s *Source) Entries() map[netip.Prefix]owners.Owner {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entries
}

// Start implements localowner.Source: it starts the watches and waits up to
// 10 s for their first lists, so that flows start with the pods' owners
// known; an API server not reachable by then is waited for in the
// background, logged.
func (s *Source) Start(ctx context.Context, onChange func()) error {
	resources := []resource{podResource(s.set.Client, s.set.Node)}
	if s.cfg.Services {
		resources = append(resources, serviceResource(s.set.Client))
	}
	s.mu.Lock()
	s.onChange = onChange
	s.mu.Unlock()
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	synced := make(chan struct{}, len(resources))
	for _, r := range resources {
		s.done.Add(1)
		go func() {
			defer s.done.Done()
			s.run(runCtx, r, synced)
		}()
	}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		s.cgroups.run(runCtx)
	}()
	timeout := time.NewTimer(initialSyncTimeout)
	defer timeout.Stop()
	for range resources {
		select {
		case <-synced:
		case <-timeout.C:
			s.set.Logger.Warn("The Kubernetes API server has not been listed yet; pods and Services own no address until it is",
				zap.Duration("waited", initialSyncTimeout))
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Shutdown implements localowner.Source.
func (s *Source) Shutdown() error {
	if s.cancel != nil {
		s.cancel()
	}
	s.done.Wait()
	return nil
}

// Workload returns the hostNetwork pod whose cgroup, or one of its
// containers' cgroups, has the cgroup v2 ID id: the workload that ran a
// socket on the node's address. Such a pod owns no address (the node
// does), so this is never a claim.
func (s *Source) Workload(id uint64) (owners.Owner, bool) {
	return s.cgroups.lookup(id)
}

// listing is a list of one resource being applied, page by page, into
// records that replace the current ones once it is whole.
type listing struct {
	now      time.Time
	fresh    bool // the first list since Start: pod tenures may be dated back
	pods     map[types.UID]*podRecord
	services map[types.UID]*serviceRecord
}

// beginList starts applying a list of res. For pods, cidrs are the node's
// pod CIDRs when known.
func (s *Source) beginList(res string, cidrs []netip.Prefix, cidrsKnown bool) *listing {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cidrsKnown {
		s.podCIDRs = cidrs
	}
	return &listing{fresh: !s.listed[res], pods: map[types.UID]*podRecord{}, services: map[types.UID]*serviceRecord{}}
}

// pageListed dates l when its first page arrives: the list is a snapshot
// taken before then, so what it shows held then at the latest.
func (s *Source) pageListed(l *listing) {
	if l.now.IsZero() {
		l.now = s.set.Now()
	}
}

// addPod adds a listed pod to l.
func (s *Source) addPod(l *listing, pod *corev1.Pod) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rec := s.podRecordLocked(pod, l.now, l.fresh, s.pods[pod.UID]); rec != nil {
		l.pods[pod.UID] = rec
	}
}

// addService adds a listed Service to l.
func (s *Source) addService(l *listing, svc *corev1.Service) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l.services[svc.UID] = s.serviceRecordLocked(svc, l.now, false, s.services[svc.UID])
}

// commitList replaces the records of res with l's and publishes them.
func (s *Source) commitList(res string, l *listing) {
	s.mu.Lock()
	s.listed[res] = true
	switch res {
	case ResourcePods:
		s.pods = l.pods
		s.cgroups.replace(hostNetworkPods(l.pods))
	case ResourceServices:
		s.services = l.services
	}
	s.publishLocked()
}

// hostNetworkPods returns the owners of the hostNetwork pods of recs.
func hostNetworkPods(recs map[types.UID]*podRecord) map[types.UID]owners.Owner {
	out := map[types.UID]owners.Owner{}
	for uid, rec := range recs {
		if rec.hostNetwork && rec.running {
			out[uid] = rec.owner
		}
	}
	return out
}

// upsertPod applies a pod seen in the watch at now.
func (s *Source) upsertPod(pod *corev1.Pod, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.podRecordLocked(pod, now, true, s.pods[pod.UID])
	if rec == nil {
		s.deletePodLocked(pod.UID)
		return
	}
	s.pods[pod.UID] = rec
	if rec.hostNetwork {
		s.cgroups.setPod(pod.UID, rec.owner, rec.running)
	}
}

// deletePod applies a pod's deletion.
func (s *Source) deletePod(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deletePodLocked(uid)
}

func (s *Source) deletePodLocked(uid types.UID) {
	if rec, ok := s.pods[uid]; ok && rec.hostNetwork {
		s.cgroups.setPod(uid, owners.Owner{}, false)
	}
	delete(s.pods, uid)
}

// podRecordLocked returns the record of pod at now, given its previous
// record prev (nil for a pod not known), or nil for a pod not on this
// node. fresh allows dating a new address back to the pod's sandbox.
func (s *Source) podRecordLocked(pod *corev1.Pod, now time.Time, fresh bool, prev *podRecord) *podRecord {
	if pod.Spec.NodeName != s.set.Node {
		return nil
	}
	owner, dropped, ok := s.builder.podOwner(pod)
	if dropped > 0 && (prev == nil || !prev.owner.Equal(owner)) {
		s.set.Telemetry.AttributesDropped(dropped)
	}
	sandboxSince, sandboxKnown, up := sandboxState(pod)
	rec := &podRecord{owner: owner, hostNetwork: pod.Spec.HostNetwork, running: ok && up && !terminal(pod)}
	if rec.hostNetwork || terminal(pod) || !up {
		return rec
	}
	for _, a := range podAddresses(pod) {
		h, kept := findAddr(prevAddrs(prev), a)
		if !kept {
			h = heldAddr{addr: a, since: now}
			if sandboxKnown {
				h.acquired = sandboxSince
				if fresh && sandboxSince.Before(now) {
					h.since = sandboxSince
				}
			}
		}
		// Also for a kept address: an update may take the owner beyond
		// the limits, or back within them.
		switch {
		case !ok:
			s.refuse(&h, RefusedOwnerTooLarge)
		case !s.inPodCIDRsLocked(a):
			s.refuse(&h, RefusedOutsidePodCIDRs)
		default:
			s.refuse(&h, "")
		}
		rec.addrs = append(rec.addrs, h)
	}
	return rec
}

// refuse sets why h is refused, "" for not, counting a reason h did
// not have: an address is counted once per owner, address and reason while
// it stays refused.
func (s *Source) refuse(h *heldAddr, reason string) {
	if reason != "" && reason != h.refused {
		s.set.Telemetry.AddressRefused(reason)
	}
	h.refused = reason
}

func prevAddrs(p *podRecord) []heldAddr {
	if p == nil {
		return nil
	}
	return p.addrs
}

func findAddr(addrs []heldAddr, a netip.Addr) (heldAddr, bool) {
	for _, h := range addrs {
		if h.addr == a {
			return h, true
		}
	}
	return heldAddr{}, false
}

// inPodCIDRsLocked reports whether a may be claimed for a pod of this node.
func (s *Source) inPodCIDRsLocked(a netip.Addr) bool {
	if !s.cfg.RestrictToPodCIDRs {
		return true
	}
	for _, p := range s.podCIDRs {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// upsertService applies a Service seen in the watch at now.
func (s *Source) upsertService(svc *corev1.Service, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.services[svc.UID] = s.serviceRecordLocked(svc, now, true, s.services[svc.UID])
}

// serviceRecordLocked returns the record of svc at now, given its previous
// record prev; watched tells that svc comes from the watch.
func (s *Source) serviceRecordLocked(svc *corev1.Service, now time.Time, watched bool, prev *serviceRecord) *serviceRecord {
	owner, ok := s.builder.serviceOwner(svc)
	rec := &serviceRecord{owner: owner}
	var prevAddrs []heldAddr
	if prev != nil {
		prevAddrs = prev.addrs
	}
	// A Service not known in the watch was created after the list the
	// watch started from, and its first event is the Service as created:
	// its cluster IPs are those allocated then. A listed Service may have
	// got one later (ExternalName to ClusterIP, single to dual stack), which
	// it does not tell, so even the first list dates none back: the other
	// nodes' collectors, which claim every Service too, cover the time
	// before. A new address of a known Service is its from now on.
	datable := watched && prev == nil && !svc.CreationTimestamp.IsZero()
	created := svc.CreationTimestamp.Add(time.Second).Truncate(time.Second)
	reason := ""
	if !ok {
		reason = RefusedOwnerTooLarge
	}
	for _, a := range serviceAddresses(svc) {
		h, kept := findAddr(prevAddrs, a)
		if !kept {
			h = heldAddr{addr: a, since: now}
			if datable {
				h.acquired = created
				if created.Before(now) {
					h.since = created
				}
			}
		}
		s.refuse(&h, reason)
		rec.addrs = append(rec.addrs, h)
	}
	return rec
}

func (s *Source) deleteService(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.services, uid)
}

// gap drops the records of resource, whose watch ended: what happened
// since is unknown, so its owners stop now.
func (s *Source) gap(res string) {
	s.mu.Lock()
	switch res {
	case ResourcePods:
		s.pods = map[types.UID]*podRecord{}
		s.cgroups.clear()
	case ResourceServices:
		s.services = map[types.UID]*serviceRecord{}
	}
	s.publishLocked()
	s.set.Telemetry.WatchGap(res)
}

// publish publishes the records' tenures.
func (s *Source) publish() {
	s.mu.Lock()
	s.publishLocked()
}

// publishLocked builds the tenures from the records and, when they
// changed, calls onChange after unlocking mu (Source must not hold a lock
// that Entries takes while calling it).
func (s *Source) publishLocked() {
	// Of the owners that list one address, the one that got it last owns
	// it. When that one is not known (two got it at the same time, or one
	// at a time not known) none does, and neither when it is refused: an
	// older owner would keep an address that is no longer its.
	type candidate struct {
		owner owners.Owner
		heldAddr
		listed  int  // owners that list the address
		unknown bool // when one of them got it is not known
		tie     bool // another got it when this one did
	}
	best := make(map[netip.Prefix]candidate, len(s.tenures))
	offer := func(o owners.Owner, addrs []heldAddr) {
		for _, h := range addrs {
			p := netip.PrefixFrom(h.addr, h.addr.BitLen())
			c := best[p]
			c.listed++
			c.unknown = c.unknown || h.acquired.IsZero()
			switch {
			case c.listed == 1 || h.acquired.After(c.acquired):
				c.owner, c.heldAddr, c.tie = o, h, false
			case h.acquired.Equal(c.acquired):
				c.tie = true
			}
			best[p] = c
		}
	}
	for _, rec := range s.pods {
		offer(rec.owner, rec.addrs)
	}
	for _, rec := range s.services {
		offer(rec.owner, rec.addrs)
	}
	tenures := make(map[netip.Prefix]localowner.Tenure, len(best))
	entries := make(map[netip.Prefix]owners.Owner, len(best))
	for p, c := range best {
		if c.refused != "" || c.listed > 1 && (c.unknown || c.tie) {
			continue
		}
		tenures[p] = localowner.Tenure{Owner: c.owner, Since: c.since}
		entries[p] = c.owner
	}
	changed := !maps.EqualFunc(tenures, s.tenures, func(a, b localowner.Tenure) bool {
		return a.Owner.ID == b.Owner.ID && a.Since.Equal(b.Since) && a.Owner.Equal(b.Owner)
	})
	if changed {
		s.tenures, s.entries = tenures, entries
	}
	onChange := s.onChange
	s.mu.Unlock()
	if changed && onChange != nil {
		onChange()
	}
}
