package fleet

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowattr/flowattr/test/internal/collectortest"
)

// Timing of the node fleet scenario. The ownership file is polled every
// pollInterval and owned addresses are claimed every claimInterval; a
// flow waits up to maxWait for the claim that covers its peer, which must
// exceed claimInterval + the injected claimDelay + the receiver's
// flush interval + the exporter's retry backoff.
const (
	claimInterval = time.Second
	pollInterval  = 250 * time.Millisecond
	claimDelay    = 2 * time.Second
	maxWait       = 8 * time.Second
	clockSkew     = time.Second
	// An address is reused only after the old owner's claims have
	// stopped (its collector reloaded the file) and clock_skew more.
	quarantine = clockSkew + 500*time.Millisecond
	// edgeSlack is how near an edge of what could be claimed (a collector
	// start, an address assigned or released) a flow may start and be left
	// near_unclaimed_edge: the clock_skew window, plus a claim interval
	// for when the receiver actually learnt or dropped the owner.
	edgeSlack = clockSkew + claimInterval
	// edgePhase replaces the phase of records left unattributed near an edge.
	edgePhase  = "edge"
	serverPort = 8080
)

// nodeOverlay is merged over testdata/fleet/node.yaml: fast timings, only the
// namespace the collector runs in (every namespace shares one kernel, and
// the tracepoint sees them all), no records of the collectors' own traffic
// on the hosts' infrastructure addresses, and which host may claim what,
// alike in both processors of the shared store.
const nodeOverlay = `
receivers:
  ebpfflow:
    flush_interval: 250ms
    active_interval: 0s
    filter:
      own_netns_only: true
      exclude_cidrs: [10.201.0.1/32, 10.201.0.2/32]
processors:
  ownership: &store
    max_wait: 8s
    clock_skew: 1s
    senders:
      host-1: [10.201.0.8/29, 10.201.0.50/32]
      host-2: [10.201.0.16/29, 10.201.0.50/32]
  ownership/peers: *store
`

// workload is a server on one address of one host: it accepts connections
// and reads them to the end.
type workload struct {
	addr  netip.Addr
	owner string
	host  *host
	l     net.Listener
	wg    sync.WaitGroup
}

func startWorkload(t *testing.T, a netip.Addr, owner string, h *host) *workload {
	t.Helper()
	l, err := listenIn(h.netns, netip.AddrPortFrom(a, serverPort).String())
	must(t, err, "listening on %s in %s", a, h.name)
	w := &workload{addr: a, owner: owner, host: h, l: l}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			w.wg.Add(1)
			go func() {
				defer w.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *workload) stop() {
	_ = w.l.Close()
	w.wg.Wait()
}

// node is one host's collector and its configuration.
type node struct {
	host      *host
	ownership string // path of its ownership file
	spec      collectortest.Options
	col       *collectortest.Collector
}

// writeOwnership replaces the node's ownership file atomically, as an IPAM
// agent would.
func (n *node) writeOwnership(t *testing.T, owners map[netip.Addr]string) {
	t.Helper()
	var b []byte
	for a, o := range owners {
		b = fmt.Appendf(b, "- {prefixes: [%s], id: %s}\n", a, o)
	}
	if len(owners) == 0 {
		b = []byte("[]\n")
	}
	tmp := n.ownership + ".tmp"
	must(t, os.WriteFile(tmp, b, 0o644), "writing %s", tmp)
	must(t, os.Rename(tmp, n.ownership), "renaming %s", tmp)
}

// rewriteOwnership writes the ownership file and waits until the collector
// has loaded it, plus a claim interval for the new map to be in use.
func (n *node) rewriteOwnership(t *testing.T, owners map[netip.Addr]string) {
	t.Helper()
	reloads := func() float64 {
		return collectortest.MetricSum(n.col.Metrics(t, "127.0.0.1:8888"), "otelcol_ebpfflow_ownership_file_reloads", "result", "success")
	}
	before := reloads()
	n.writeOwnership(t, owners)
	if !eventually(10*time.Second, 50*time.Millisecond, func() bool { return reloads() > before }) {
		t.Fatalf("%s did not reload its ownership file", n.host.name)
	}
	time.Sleep(claimInterval)
}

func (n *node) start(t *testing.T) {
	t.Helper()
	n.col = collectortest.Start(t, n.spec)
	n.col.WaitReady(t, "127.0.0.1:13133")
}

// traffic opens short connections between workloads until stopped, and
// records each in the ground truth.
type traffic struct {
	truth *groundTruth
	mu    sync.RWMutex // held for reading by every connection in flight
	// pairs maps a client address to the servers it connects to.
	pairs   [][2]*workload
	stopped chan struct{}
	done    sync.WaitGroup
	failed  int
	made    int
}

// setPairs replaces the pairs, after every connection of the old set has
// finished.
func (tr *traffic) setPairs(p [][2]*workload) {
	tr.mu.Lock()
	tr.pairs = p
	tr.mu.Unlock()
}

func (tr *traffic) run(interval time.Duration) {
	tr.done.Add(1)
	go func() {
		defer tr.done.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-tr.stopped:
				return
			case <-tick.C:
			}
			tr.mu.RLock()
			var wg sync.WaitGroup
			for _, p := range tr.pairs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tr.connect(p[0], p[1])
				}()
			}
			wg.Wait()
			tr.mu.RUnlock()
		}
	}()
}

// connect makes one connection from client's address to server, sends a
// little and closes it.
func (tr *traffic) connect(client, server *workload) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := netnsDialer(client.host.netns, client.addr)(ctx, "tcp", netip.AddrPortFrom(server.addr, serverPort).String())
	if err != nil {
		tr.truth.mu.Lock()
		tr.failed++
		tr.truth.mu.Unlock()
		return
	}
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	_, _ = c.Write(make([]byte, 1000))
	_ = c.Close()
	// The server closes as soon as it reads the end of the stream.
	end := time.Now().Add(100 * time.Millisecond)
	tr.truth.addConn(&connection{
		client:     netip.AddrPortFrom(local.Addr().Unmap(), local.Port()),
		server:     netip.AddrPortFrom(server.addr, serverPort),
		clientHost: client.host,
		serverHost: server.host,
		start:      start,
		end:        end,
	})
	tr.truth.mu.Lock()
	tr.made++
	tr.truth.mu.Unlock()
}

// nodeFleet is two hosts running node.yaml: host-1 with the workloads web
// and cache-a, host-2 with db, each collector reading its host's ownership
// file, exchanging claims over mutual TLS, and sending its flow records to
// one sink.
type nodeFleet struct {
	h1, h2          *host
	web, db, moving netip.Addr // moving starts as cache-a's, on host-1
	truth           *groundTruth
	sink            *collectortest.Sink
	nodes           map[*host]*node
	proxies         map[*host]*delayProxy // nil when peers connect directly
}

// startNodeFleet builds the hosts and starts both collectors. With
// viaProxies, claims to each host go through a proxy on that host's address
// that can delay them; otherwise peers connect to each other directly.
func startNodeFleet(t *testing.T, viaProxies bool) *nodeFleet {
	t.Helper()
	requireNetnsAndBPF(t)
	collectortest.Binary(t)
	h1, h2 := newHostPair(t)
	f := &nodeFleet{
		h1: h1, h2: h2,
		web: netip.MustParseAddr("10.201.0.11"), db: netip.MustParseAddr("10.201.0.21"), moving: netip.MustParseAddr("10.201.0.50"),
		truth: newGroundTruth(),
		nodes: map[*host]*node{},
	}
	h1.addAddr(t, f.web)
	h1.addAddr(t, f.moving)
	h2.addAddr(t, f.db)

	ca := newTestCA(t, "flowattr-test-fleet")
	sinkListener, err := listenIn(h1.netns, netip.AddrPortFrom(h1.addr, 0).String())
	must(t, err, "sink listener")
	f.sink = collectortest.ServeSink(t, sinkListener)

	claimEndpoint := func(h *host) string { return netip.AddrPortFrom(h.addr, 4317).String() }
	peer := claimEndpoint
	if viaProxies {
		f.proxies = map[*host]*delayProxy{}
		for _, h := range []*host{h1, h2} {
			l, err := listenIn(h.netns, netip.AddrPortFrom(h.addr, 0).String())
			must(t, err, "proxy listener")
			f.proxies[h] = startDelayProxy(t, l, netnsDialer(h.netns, netip.Addr{}), claimEndpoint(h))
		}
		peer = func(h *host) string { return f.proxies[h].l.Addr().String() }
	}

	dir := t.TempDir()
	overlay := filepath.Join(dir, "overlay.yaml")
	must(t, os.WriteFile(overlay, []byte(nodeOverlay), 0o600), "overlay")
	for _, h := range []*host{h1, h2} {
		cert := ca.issue(t, h.name, h.addr.AsSlice())
		n := &node{host: h, ownership: filepath.Join(dir, h.name+"-owners.yaml")}
		n.spec = collectortest.Options{
			Name:    h.name,
			Configs: []string{configPath(t, "node.yaml"), overlay},
			// ip netns exec execs the binary, so the process is the collector.
			Wrapper: []string{"ip", "netns", "exec", h.netns},
			Dial:    netnsDialer(h.netns, netip.Addr{}),
			Env: map[string]string{
				"FLOWATTR_NODE_NAME":               h.name,
				"FLOWATTR_OWNERSHIP_FILE":          n.ownership,
				"FLOWATTR_OWNERSHIP_POLL_INTERVAL": pollInterval.String(),
				"FLOWATTR_CLAIM_INTERVAL":          claimInterval.String(),
				"FLOWATTR_CLAIM_ENDPOINT":          claimEndpoint(h),
				"FLOWATTR_PEER_1":                  peer(h1),
				"FLOWATTR_PEER_2":                  peer(h2),
				"FLOWATTR_TLS_CA":                  ca.File,
				"FLOWATTR_TLS_CERT":                cert.CertFile,
				"FLOWATTR_TLS_KEY":                 cert.KeyFile,
				"FLOWATTR_FLOWS_ENDPOINT":          f.sink.Addr.String(),
			},
		}
		f.nodes[h] = n
	}
	t0 := f.truth.t0
	f.truth.assign(f.web, "web", h1, t0)
	f.truth.assign(f.moving, "cache-a", h1, t0)
	f.truth.assign(f.db, "db", h2, t0)
	f.nodes[h1].writeOwnership(t, map[netip.Addr]string{f.web: "web", f.moving: "cache-a"})
	f.nodes[h2].writeOwnership(t, map[netip.Addr]string{f.db: "db"})
	for _, n := range f.nodes {
		n.start(t)
		f.truth.markEdge(time.Now())
	}
	return f
}

// TestNodeFleetInNamespaces runs two node collectors (testdata/fleet/node.yaml)
// in two network namespaces that stand for hosts, exchanging claims over
// mutual TLS, while workloads on both hosts talk over real TCP. Mid-test the
// claims into host 2 are delayed, an address moves from a workload on
// host 1 to a different workload on host 2 while traffic to it continues,
// and host 2's collector restarts with an empty store. Every flow record
// that reaches the sink is checked against the test's ground truth.
func TestNodeFleetInNamespaces(t *testing.T) {
	f := startNodeFleet(t, true)
	h1, h2, truth, nodes, proxies := f.h1, f.h2, f.truth, f.nodes, f.proxies
	web, db, moving := f.web, f.db, f.moving
	t0 := truth.t0
	sink := f.sink

	wWeb := startWorkload(t, web, "web", h1)
	wDB := startWorkload(t, db, "db", h2)
	wCacheA := startWorkload(t, moving, "cache-a", h1)
	tr := &traffic{truth: truth, stopped: make(chan struct{})}
	withCache := func(cache *workload) [][2]*workload {
		return [][2]*workload{{wWeb, wDB}, {wDB, wWeb}, {wWeb, cache}, {wDB, cache}, {cache, wDB}}
	}
	tr.setPairs(withCache(wCacheA))
	tr.run(200 * time.Millisecond)
	stopTraffic := sync.OnceFunc(func() { close(tr.stopped); tr.done.Wait() })
	t.Cleanup(stopTraffic)

	step := func(what string) { t.Logf("%5.1fs %s", time.Since(t0).Seconds(), what) }
	step("steady traffic")
	time.Sleep(6 * time.Second)

	truth.setPhase("delayed")
	step("claims into both hosts delayed by " + claimDelay.String())
	for _, p := range proxies {
		p.setDelay(claimDelay)
	}
	time.Sleep(8 * time.Second)
	for _, p := range proxies {
		p.setDelay(0)
	}
	// The delayed claims made flows wait for them, and attributed them.
	held := collectortest.MetricSum(nodes[h2].col.Metrics(t, "127.0.0.1:8888"), "otelcol_processor_ownership_records_released", "outcome", "attributed")
	step(fmt.Sprintf("host-2 released %.0f held records once their claim arrived", held))
	if held == 0 {
		t.Errorf("no record waited for a delayed claim on host-2")
	}

	truth.setPhase("move")
	step("cache-a leaves " + moving.String() + " on host-1")
	tr.setPairs([][2]*workload{{wWeb, wDB}, {wDB, wWeb}})
	wCacheA.stop()
	// The IPAM agent's contract: the old host stops claiming the address
	// (its collector has reloaded the file) before the address is released,
	// and the address is reused only after the quarantine.
	// cache-a's claims end when host-1's collector reloads this file.
	truth.markEdge(time.Now())
	nodes[h1].rewriteOwnership(t, map[netip.Addr]string{web: "web"})
	h1.delAddr(t, moving)
	truth.release(moving, time.Now())
	time.Sleep(quarantine)
	h2.addAddr(t, moving)
	truth.assign(moving, "cache-b", h2, time.Now())
	nodes[h2].rewriteOwnership(t, map[netip.Addr]string{db: "db", moving: "cache-b"})
	step("cache-b serves " + moving.String() + " on host-2")
	wCacheB := startWorkload(t, moving, "cache-b", h2)
	tr.setPairs(withCache(wCacheB))
	time.Sleep(3 * time.Second)

	// Records host-2 holds for a claim still in flight when it stops
	// are released unattributed at shutdown: those of the last claim
	// interval or so before the restart (the window leaves room for a slow
	// machine).
	truth.setPhase("pre-restart")
	time.Sleep(2*claimInterval + time.Second)
	truth.setPhase("restart")
	step("host-2's collector restarts")
	downFrom := time.Now()
	nodes[h2].col.Stop(t)
	// While it is down, host-1's exporter queues and retries, and host-1
	// holds its flows towards host-2's addresses.
	time.Sleep(3 * time.Second)
	nodes[h2].start(t)
	truth.markEdge(time.Now())
	truth.markDown(h2, downFrom, time.Now())
	step("host-2's collector is back")

	truth.setPhase("after-restart")
	time.Sleep(6 * time.Second)
	m1a := nodes[h1].col.Metrics(t, "127.0.0.1:8888")
	steadyFrom := time.Now()
	time.Sleep(8 * time.Second)
	m1b := nodes[h1].col.Metrics(t, "127.0.0.1:8888")
	steadyFor := time.Since(steadyFrom)
	// node.yaml binds each claim's sender to the sender's certificate:
	// every node sends under the name its certificate carries.
	if n := collectortest.MetricSum(m1b, "otelcol_processor_ownership_claims_rejected", "reason", "unauthenticated_sender"); n != 0 {
		t.Errorf("host-1 rejected %.0f peer claims as unauthenticated_sender, want 0", n)
	}
	stopTraffic()
	step("traffic stopped")

	// Let held records wait out max_wait, then stop the collectors, which
	// flushes what they still hold.
	time.Sleep(maxWait + 2*time.Second)
	for _, h := range []*host{h1, h2} {
		nodes[h].col.Stop(t)
	}
	step("collectors stopped")

	inodes := map[int64]*host{netnsInode(t, h1.netns): h1, netnsInode(t, h2.netns): h2}
	v := truth.check(sink.Records(), inodes)
	t.Logf("connections made %d, failed to connect %d\n%s", tr.made, tr.failed, v)

	flows := collectortest.MetricSum(m1b, "otelcol_ebpfflow_flows_emitted") - collectortest.MetricSum(m1a, "otelcol_ebpfflow_flows_emitted")
	claims := collectortest.MetricSum(m1b, "otelcol_ebpfflow_claims_emitted") - collectortest.MetricSum(m1a, "otelcol_ebpfflow_claims_emitted")
	peers := 2.0
	t.Logf("steady state on host-1 over %s: %.0f flow records, %.0f claim records emitted (x%.0f peers = %.0f sent); claim/flow = %.3f emitted, %.3f on the wire; %.1f claim records/s at claim_interval %s",
		steadyFor.Round(time.Millisecond), flows, claims, peers, claims*peers, claims/flows, claims*peers/flows, claims/steadyFor.Seconds(), claimInterval)

	if v.misattributed > 0 {
		t.Errorf("%d flow records misattributed", v.misattributed)
	}
	if len(v.lost) > 0 {
		t.Errorf("%d connection ends lost", len(v.lost))
	}
	if v.duplicates > 0 || v.unknown > 0 || v.wrongLocalOwner > 0 || v.wrongHost > 0 {
		t.Errorf("duplicates %d, unknown %d, wrong local owner %d, wrong namespace %d", v.duplicates, v.unknown, v.wrongLocalOwner, v.wrongHost)
	}
	for k, n := range v.unattributed {
		if !strings.HasPrefix(k, "pre-restart/") && !strings.HasPrefix(k, "restart/") && !strings.HasPrefix(k, edgePhase+"/") {
			t.Errorf("%d records not attributed (%s) outside the restart of host-2's collector", n, k)
		}
	}
	if v.attributed == 0 || tr.made == 0 {
		t.Errorf("nothing attributed (%d connections made)", tr.made)
	}
	if flows == 0 || claims == 0 {
		t.Errorf("no steady-state measurement: %v flows, %v claims", flows, claims)
	}
}
