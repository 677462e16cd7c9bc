package kube // import "github.com/flowattr/flowattr/internal/localowner/kube"

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// Timing of the list-and-watch loop.
const (
	// listPageSize bounds the objects of one list response, so that a
	// list of many pods or Services never holds them all decoded at once.
	listPageSize = 500
	// watchTimeout is how long the source asks the API server to keep a
	// watch open. Each end of a watch is a gap (see Source), so watches
	// are kept long: client-go's HTTP/2 health check still notices a
	// dead connection within about 45 s.
	watchTimeout = time.Hour
	// publishDelay batches the events of a burst into one merge: the
	// source publishes once no event came for this long, or once the
	// oldest unpublished event is maxPublishDelay old.
	publishDelay    = 5 * time.Millisecond
	maxPublishDelay = 100 * time.Millisecond
	// Backoff between failed lists, doubling up to maxBackoff.
	minBackoff = 500 * time.Millisecond
	maxBackoff = 30 * time.Second
)

// resource is one kind of object the source lists and watches.
type resource struct {
	name string
	// begin starts a list (for pods, reading the node's pod CIDRs first).
	begin func(s *Source, ctx context.Context) *listing
	// list lists one page and adds its objects to l; it returns the
	// continue token and the list's resource version.
	list  func(s *Source, ctx context.Context, l *listing, opts metav1.ListOptions) (cont, rv string, err error)
	watch func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	// apply applies one watch event, at now.
	apply func(s *Source, ev watch.Event, now time.Time)
}

// podResource is the node's pods, selected by spec.nodeName.
func podResource(c kubernetes.Interface, node string) resource {
	sel := fields.OneTermEqualSelector("spec.nodeName", node).String()
	return resource{
		name: ResourcePods,
		begin: func(s *Source, ctx context.Context) *listing {
			cidrs, known := s.readPodCIDRs(ctx, c)
			return s.beginList(ResourcePods, cidrs, known)
		},
		list: func(s *Source, ctx context.Context, l *listing, opts metav1.ListOptions) (string, string, error) {
			opts.FieldSelector = sel
			pods, err := c.CoreV1().Pods("").List(ctx, opts)
			if err != nil {
				return "", "", err
			}
			s.pageListed(l)
			for i := range pods.Items {
				s.addPod(l, &pods.Items[i])
			}
			return pods.Continue, pods.ResourceVersion, nil
		},
		watch: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = sel
			return c.CoreV1().Pods("").Watch(ctx, opts)
		},
		apply: func(s *Source, ev watch.Event, now time.Time) {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				return
			}
			if ev.Type == watch.Deleted {
				s.deletePod(pod.UID)
				return
			}
			s.upsertPod(pod, now)
		},
	}
}

// serviceResource is every Service of the cluster.
func serviceResource(c kubernetes.Interface) resource {
	return resource{
		name: ResourceServices,
		begin: func(s *Source, _ context.Context) *listing {
			return s.beginList(ResourceServices, nil, false)
		},
		list: func(s *Source, ctx context.Context, l *listing, opts metav1.ListOptions) (string, string, error) {
			svcs, err := c.CoreV1().Services("").List(ctx, opts)
			if err != nil {
				return "", "", err
			}
			s.pageListed(l)
			for i := range svcs.Items {
				s.addService(l, &svcs.Items[i])
			}
			return svcs.Continue, svcs.ResourceVersion, nil
		},
		watch: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			return c.CoreV1().Services("").Watch(ctx, opts)
		},
		apply: func(s *Source, ev watch.Event, now time.Time) {
			svc, ok := ev.Object.(*corev1.Service)
			if !ok {
				return
			}
			if ev.Type == watch.Deleted {
				s.deleteService(svc.UID)
				return
			}
			s.upsertService(svc, now)
		},
	}
}

// readPodCIDRs reads the node's spec.podCIDRs when restrict_to_pod_cidrs is
// set; known is false when they could not be read, and the last ones read
// stay in use (none at first: every pod address is refused until then).
func (s *Source) readPodCIDRs(ctx context.Context, c kubernetes.Interface) ([]netip.Prefix, bool) {
	if !s.cfg.RestrictToPodCIDRs {
		return nil, false
	}
	node, err := c.CoreV1().Nodes().Get(ctx, s.set.Node, metav1.GetOptions{})
	if err != nil {
		s.set.Logger.Warn("Cannot read the node's pod CIDRs (restrict_to_pod_cidrs); keeping the last ones read",
			zap.String("node", s.set.Node), zap.Error(err))
		return nil, false
	}
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	var out []netip.Prefix
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil {
			out = append(out, p.Masked())
		}
	}
	if len(out) == 0 {
		s.set.Logger.Warn("The node has no spec.podCIDRs: with restrict_to_pod_cidrs every pod address is refused",
			zap.String("node", s.set.Node))
	}
	return out, true
}

// run lists and watches r until ctx ends, signalling synced after the first
// list. Every end of a watch is a gap: r's owners stop, and r is listed
// again.
func (s *Source) run(ctx context.Context, r resource, synced chan<- struct{}) {
	backoff := minBackoff
	first := true
	for ctx.Err() == nil {
		rv, err := s.list(ctx, r)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.set.Logger.Warn("Cannot list from the Kubernetes API server; retrying",
				zap.String("resource", r.name), zap.Duration("retry_in", backoff), zap.Error(explain(err)))
			if !sleep(ctx, jitter(backoff)) {
				return
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		if first {
			synced <- struct{}{}
			first = false
		}
		watched, err := s.watch(ctx, r, rv)
		if ctx.Err() != nil {
			return
		}
		s.gap(r.name)
		s.set.Logger.Info("Kubernetes watch ended; its owners stop until it is listed again",
			zap.String("resource", r.name), zap.Error(err))
		if watched {
			backoff = minBackoff
		}
		if !sleep(ctx, jitter(backoff)) {
			return
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// list lists r page by page and applies the whole list, returning its
// resource version.
func (s *Source) list(ctx context.Context, r resource) (string, error) {
	l := r.begin(s, ctx)
	opts := metav1.ListOptions{Limit: listPageSize}
	var rv string
	for {
		cont, pageRV, err := r.list(s, ctx, l, opts)
		if err != nil {
			return "", err
		}
		if rv == "" {
			rv = pageRV
		}
		if cont == "" {
			break
		}
		opts.Continue = cont
	}
	s.commitList(r.name, l)
	return rv, nil
}

// watch watches r from rv and applies its events until the watch ends; it
// reports whether the watch delivered anything, for the backoff.
func (s *Source) watch(ctx context.Context, r resource, rv string) (bool, error) {
	timeout := int64(watchTimeout.Seconds())
	w, err := r.watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true, TimeoutSeconds: &timeout})
	if err != nil {
		return false, err
	}
	defer w.Stop()
	delivered := false
	var pending, due <-chan time.Time
	var quiet, oldest *time.Timer
	stopTimers := func() {
		if quiet != nil {
			quiet.Stop()
			oldest.Stop()
			quiet, oldest, pending, due = nil, nil, nil, nil
		}
	}
	defer stopTimers()
	for {
		select {
		case <-ctx.Done():
			return delivered, ctx.Err()
		case <-pending:
			stopTimers()
			s.publish()
		case <-due:
			stopTimers()
			s.publish()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return delivered, errors.New("the API server closed the watch")
			}
			delivered = true
			switch ev.Type {
			case watch.Added, watch.Modified, watch.Deleted:
				r.apply(s, ev, s.set.Now())
			case watch.Bookmark:
				continue
			case watch.Error:
				return delivered, apierrors.FromObject(ev.Object)
			default:
				continue
			}
			if quiet == nil {
				quiet, oldest = time.NewTimer(publishDelay), time.NewTimer(maxPublishDelay)
				pending, due = quiet.C, oldest.C
			} else {
				quiet.Reset(publishDelay)
			}
		}
	}
}

// explain adds what to do to errors an operator can fix.
func explain(err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("%w (the collector's service account needs get, list and watch on pods, list and watch on services with services enabled, and get on nodes with restrict_to_pod_cidrs; see docs/kubernetes.md)", err)
	}
	return err
}

func jitter(d time.Duration) time.Duration {
	return d + time.Duration(rand.Int64N(int64(d)/4+1))
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
