package kube

import (
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/test/internal/collectortest"
	"github.com/flowattr/flowattr/test/internal/netns"
)

// The addresses of TestClusterIPService: a client pod and a backend pod in
// namespaces of their own, routed through the node's namespace, which
// translates the Service's cluster IP (in envtest's service range) to the
// backend.
var svcAddrs = netns.NATAddrs{
	Client:  netip.MustParseAddr("10.244.1.2"),
	NodeC:   netip.MustParseAddr("10.244.1.1"),
	NodeS:   netip.MustParseAddr("10.244.2.1"),
	Backend: netip.MustParseAddrPort("10.244.2.2:8080"),
	Service: netip.MustParseAddrPort("10.0.0.10:80"),
}

// TestClusterIPService runs the collector in a node's network namespace
// whose DNAT rule (nft, as kube-proxy's) translates a Service's cluster IP
// to a backend pod. The Service owns its cluster IP and the pods their
// addresses, from the API server: a client pod's connection to the cluster
// IP is attributed to the Service, and its translated peer, read from
// the node's connection tracking, to the backend pod.
func TestClusterIPService(t *testing.T) {
	requireEnv(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("SKIPPED, NOT RUN: nft is missing (`make test-deps` installs it)")
	}
	c := startCluster(t)
	c.addNode(t, "10.244.0.0/16")
	top := netns.NewNAT(t, "kubesvc", "ks", fmt.Sprintf("%05d", os.Getpid()%100000), svcAddrs)
	client, server := &space{netns.End{NS: top.Client}}, &space{netns.End{NS: top.Server}}
	server.serve(t, int(svcAddrs.Backend.Port()))

	u, err := url.Parse(c.env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	l, err := netns.Listen(top.Node, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxy := startCutProxy(t, l, u.Host)
	sinkListener, err := netns.Listen(top.Node, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sink := collectortest.ServeSink(t, sinkListener)
	startCollectorIn(t, top.Node, throughProxy(t, c.kubeconfig, proxy), sink)

	svc, err := c.client.CoreV1().Services("default").Create(t.Context(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			ClusterIP: svcAddrs.Service.Addr().String(),
			Ports:     []corev1.ServicePort{{Port: int32(svcAddrs.Service.Port()), Protocol: corev1.ProtocolTCP}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating the Service: %v", err)
	}
	pods := map[string]netip.Addr{"client": svcAddrs.Client, "web-1": svcAddrs.Backend.Addr()}
	uids := map[string]string{}
	for name, addr := range pods {
		pod := c.startPod(t, c.createPod(t, podSpec{name: name, node: node}), addr, time.Now())
		uids[name] = string(pod.UID)
	}
	waitClaim(t, sink, svcAddrs.Service.Addr(), string(svc.UID), time.Time{})
	for name, addr := range pods {
		waitClaim(t, sink, addr, uids[name], time.Time{})
	}
	time.Sleep(edgeMargin)

	p, start := client.connect(t, svcAddrs.Service.Addr(), int(svcAddrs.Service.Port()))
	rec := clientRecord(t, sink, conn{client: svcAddrs.Client, clientPort: p, start: start})
	for k, want := range map[string]any{
		flowschema.AttrNetworkPeerAddress:                               svcAddrs.Service.Addr().String(),
		flowschema.AttrPeerTranslatedAddress:                            svcAddrs.Backend.Addr().String(),
		flowschema.AttrPeerTranslatedPort:                               int64(svcAddrs.Backend.Port()),
		flowschema.PrefixLocalOwner + flowschema.OwnerIDSuffix:          uids["client"],
		flowschema.AttrPeerAttributionStatus:                            "attributed",
		flowschema.PrefixPeerOwner + flowschema.OwnerIDSuffix:           string(svc.UID),
		flowschema.PrefixPeerOwner + "k8s.service.name":                 "web",
		flowschema.AttrPeerTranslatedAttributionStatus:                  "attributed",
		flowschema.PrefixPeerTranslatedOwner + flowschema.OwnerIDSuffix: uids["web-1"],
		flowschema.PrefixPeerTranslatedOwner + "k8s.pod.name":           "web-1",
	} {
		if got := rec.Attrs[k]; got != want {
			t.Errorf("%s = %v, want %v", k, got, want)
		}
	}
}
