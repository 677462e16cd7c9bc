package fleet

import (
	"flag"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowattr/flowattr/test/internal/collectortest"
)

// rate is the share of outcomes attributed to the right owner, and how many
// outcomes there are.
func rate(outs []outcome) (float64, int) {
	if len(outs) == 0 {
		return 0, 0
	}
	n := 0
	for _, o := range outs {
		if o.attributed {
			n++
		}
	}
	return float64(n) / float64(len(outs)), len(outs)
}

// outcomesOf returns the outcomes of records captured by capturer for flows
// started in [from, to) whose peer is on peerHost (on any host when nil).
func outcomesOf(all []outcome, capturer, peerHost *host, from, to time.Time) []outcome {
	var out []outcome
	for _, o := range all {
		if o.capturer == capturer && (peerHost == nil || o.peerHost == peerHost) && !o.start.Before(from) && o.start.Before(to) {
			out = append(out, o)
		}
	}
	return out
}

// recovery cuts [from, to) into windows of one bucket and returns the
// start of the first window after which every window with records has an
// attribution rate within one point of steady. ok is false when that
// leaves less than minStable before to, so that a recovery is never read
// from the last few records.
func recovery(outs []outcome, steady float64, from, to time.Time, bucket, minStable time.Duration) (at time.Time, ok bool) {
	at = from
	for w := from; w.Before(to); w = w.Add(bucket) {
		var in []outcome
		for _, o := range outs {
			if !o.start.Before(w) && o.start.Before(w.Add(bucket)) {
				in = append(in, o)
			}
		}
		if r, n := rate(in); n > 0 && r < steady-0.01 {
			at = w.Add(bucket)
		}
	}
	return at, to.Sub(at) >= minStable
}

// delays returns the median and the largest delay of outs.
func delays(outs []outcome) (p50, largest time.Duration) {
	if len(outs) == 0 {
		return 0, 0
	}
	ds := make([]time.Duration, len(outs))
	for i, o := range outs {
		ds[i] = o.delay
	}
	slices.Sort(ds)
	return ds[len(ds)/2], ds[len(ds)-1]
}

// killDownFor is how long TestNodeCollectorKilled keeps host-2's collector
// dead; longer outages show how the peers' reconnection backoff grows.
var killDownFor = flag.Duration("kill-down", 3*time.Second, "how long TestNodeCollectorKilled keeps host-2's collector dead")

// Timing of the kill scenario: how long the fleet runs before the kill, and
// how long the test watches host-2 after its restart (at least).
const (
	// Longer than max_wait, so that the records held at the fleet's start
	// (near its unclaimed edge) are out before the kill.
	killSteadyFor = maxWait + 2*time.Second
	killWatchFor  = 15 * time.Second
	// recoveryBucket is the window over which host-2's attribution rate is
	// taken after the restart: about 15 of its records.
	recoveryBucket = time.Second
	// recoveryBound is the generous bound on the time from the restart
	// until host-2's attribution is back to steady state, for outages up
	// to killWatchFor.
	recoveryBound = 10 * time.Second
	// killLossWindow bounds how long before a SIGKILL a connection may
	// have ended and still be lost with the collector's memory: the
	// receiver's batch, the hold (max_wait) and the flow exporter's queue.
	killLossWindow = maxWait + 2*time.Second
)

// TestNodeCollectorKilled runs the node fleet (node.yaml, peers connected
// directly) with traffic between both hosts, kills host-2's collector with
// SIGKILL, restarts it -kill-down (3 s) later with an empty store, and checks every flow
// record against the ground truth: nothing misattributed on either host;
// host-1 keeps attributing what it can; what host-2 had in memory at the
// kill is lost (the connections that ended in the last seconds before it)
// and nothing else; host-1's claims that could not reach host-2 wait in its
// exporter's queue and reach the restarted collector; host-2's attribution
// rate returns to its steady state, and the test reports how soon.
func TestNodeCollectorKilled(t *testing.T) {
	f := startNodeFleet(t, false)
	h1, h2, truth := f.h1, f.h2, f.truth
	n1, n2 := f.nodes[h1], f.nodes[h2]
	wWeb := startWorkload(t, f.web, "web", h1)
	wDB := startWorkload(t, f.db, "db", h2)
	wCache := startWorkload(t, f.moving, "cache-a", h1)
	tr := &traffic{truth: truth, stopped: make(chan struct{})}
	tr.setPairs([][2]*workload{{wWeb, wDB}, {wDB, wWeb}, {wWeb, wCache}, {wDB, wCache}, {wCache, wDB}})
	tr.run(200 * time.Millisecond)
	stopTraffic := sync.OnceFunc(func() { close(tr.stopped); tr.done.Wait() })
	t.Cleanup(stopTraffic)
	step := func(what string) { t.Logf("%5.1fs %s", time.Since(truth.t0).Seconds(), what) }
	step("steady traffic")
	time.Sleep(killSteadyFor)

	const peer2 = "otlp_grpc/peer-2"
	metrics1 := func() string { return n1.col.Metrics(t, "127.0.0.1:8888") }
	truth.setPhase("down")
	killAt := time.Now()
	n2.col.Kill(t)
	step("host-2's collector killed (SIGKILL)")
	// host-1's claims for host-2 wait in its peer exporter's queue and
	// are retried; none is dropped.
	// Meanwhile host-1 holds its flows towards host-2's addresses, whose
	// claims have stopped.
	heldBefore := collectortest.MetricSum(metrics1(), "otelcol_processor_ownership_records_held")
	var queued, held float64
	eventually(*killDownFor, 100*time.Millisecond, func() bool {
		m := metrics1()
		queued = max(queued, collectortest.MetricSum(m, "otelcol_exporter_queue_size", "exporter", peer2))
		held = max(held, collectortest.MetricSum(m, "otelcol_processor_ownership_records_held"))
		return time.Since(killAt) >= *killDownFor
	})
	step(fmt.Sprintf("host-1 had up to %.0f requests queued for host-2, and held up to %.0f flow records (%.0f at the kill)", queued, held, heldBefore))
	if queued == 0 {
		t.Errorf("host-1 queued no claims for the dead host-2")
	}
	if line := firstLine(n1.col.Output(), retryLog, `"otelcol.component.id": "`+peer2+`"`); line == "" {
		t.Errorf("host-1 did not log the retries of %s while host-2 was dead", peer2)
	} else {
		t.Logf("host-1 logs: %s", line)
	}

	truth.setPhase("restart")
	restartAt := time.Now()
	n2.start(t)
	readyAt := time.Now()
	truth.markEdge(readyAt)
	truth.markDown(h2, killAt, readyAt)
	step(fmt.Sprintf("host-2's collector restarted, ready after %s", readyAt.Sub(restartAt).Round(time.Millisecond)))
	truth.setPhase("after-restart")
	// The restarted store fills from host-2's own claims and from
	// host-1's, the queued ones first: done once it holds every workload's
	// address, and host-1's queue for host-2 is empty.
	m2 := func() string { return n2.col.Metrics(t, "127.0.0.1:8888") }
	var rebuilt, drained time.Duration
	// Peers reconnect with gRPC's backoff, which grows with the outage.
	watchFor := max(killWatchFor, *killDownFor)
	eventually(watchFor, 100*time.Millisecond, func() bool {
		if rebuilt == 0 && collectortest.MetricSum(m2(), "otelcol_processor_ownership_keys", "store", "ownership") >= 3 {
			rebuilt = time.Since(restartAt)
		}
		if drained == 0 && collectortest.MetricSum(metrics1(), "otelcol_exporter_queue_size", "exporter", peer2) == 0 {
			drained = time.Since(restartAt)
		}
		return rebuilt > 0 && drained > 0
	})
	step(fmt.Sprintf("host-2's store holds every workload's address %s after the restart began; host-1's queue for it drained after %s",
		rebuilt.Round(100*time.Millisecond), drained.Round(100*time.Millisecond)))
	if rebuilt == 0 || drained == 0 {
		t.Errorf("within %s of its restart, host-2's store was not rebuilt (%s) or host-1's queue for it not drained (%s)", watchFor, rebuilt, drained)
	}
	time.Sleep(time.Until(readyAt.Add(watchFor)))
	watchEnd := time.Now()
	m1, m2end := metrics1(), m2()
	stopTraffic()
	step("traffic stopped")
	time.Sleep(maxWait + 2*time.Second)
	n1.col.Stop(t)
	n2.col.Stop(t)
	step("collectors stopped")

	for _, name := range []string{"otelcol_exporter_send_failed_log_records", "otelcol_exporter_enqueue_failed_log_records"} {
		if n := collectortest.MetricSum(m1, name, "exporter", peer2); n != 0 {
			t.Errorf("host-1 %s{exporter=%q} = %.0f: claims for host-2 were dropped", name, peer2, n)
		}
	}
	t.Logf("host-1 sent %.0f claim records to host-2; restarted host-2 applied %.0f claim records, %.0f local claims",
		collectortest.MetricSum(m1, "otelcol_exporter_sent_log_records", "exporter", peer2),
		collectortest.MetricSum(m2end, "otelcol_processor_ownership_claims_applied"),
		collectortest.MetricSum(m2end, "otelcol_processor_ownership_local_claims_applied"))

	inodes := map[int64]*host{netnsInode(t, h1.netns): h1, netnsInode(t, h2.netns): h2}
	v := truth.check(f.sink.Records(), inodes)
	t.Logf("connections made %d, failed to connect %d\n%s", tr.made, tr.failed, v)
	if v.misattributed > 0 {
		t.Errorf("%d flow records misattributed", v.misattributed)
	}
	if v.duplicates > 0 || v.unknown > 0 || v.wrongLocalOwner > 0 || v.wrongHost > 0 {
		t.Errorf("duplicates %d, unknown %d, wrong local owner %d, wrong namespace %d", v.duplicates, v.unknown, v.wrongLocalOwner, v.wrongHost)
	}
	// SIGKILL loses what host-2's collector held in memory, and only that.
	var killed []lostEnd
	for _, l := range v.lost {
		if l.host == h2 && l.conn.end.Before(killAt) && killAt.Sub(l.conn.end) <= killLossWindow {
			killed = append(killed, l)
			continue
		}
		t.Errorf("lost %s", l)
	}
	var oldest time.Duration
	for _, l := range killed {
		oldest = max(oldest, killAt.Sub(l.conn.end))
	}
	t.Logf("lost with host-2's collector at SIGKILL: %d connection ends, ended up to %s before the kill", len(killed), oldest.Round(time.Millisecond))

	steadyFrom := killAt.Add(-killSteadyFor / 2)
	before2 := outcomesOf(v.outcomes, h2, nil, steadyFrom, killAt)
	steady2, n := rate(before2)
	steady1own, n1own := rate(outcomesOf(v.outcomes, h1, h1, steadyFrom, killAt))
	down1own, d1own := rate(outcomesOf(v.outcomes, h1, h1, killAt, readyAt))
	down1peer, d1peer := rate(outcomesOf(v.outcomes, h1, h2, killAt, readyAt))
	t.Logf("steady state: host-2 attributed %.1f%% of %d records, host-1 %.1f%% of %d towards its own workloads", 100*steady2, n, 100*steady1own, n1own)
	t.Logf("while host-2 was down: host-1 attributed %.1f%% of %d records towards its own workloads, %.1f%% of %d towards host-2's", 100*down1own, d1own, 100*down1peer, d1peer)
	if n == 0 || n1own == 0 || d1own == 0 || d1peer == 0 {
		t.Fatalf("too few records to measure: %d, %d, %d, %d", n, n1own, d1own, d1peer)
	}
	if down1own < steady1own-0.01 {
		t.Errorf("host-1 attributed %.1f%% of flows towards its own workloads while host-2 was down, %.1f%% before", 100*down1own, 100*steady1own)
	}
	// host-2's claims resume well within max_wait of the kill, and the
	// gap is shorter than merge_gap: host-1's held flows towards host-2
	// are attributed once they arrive.
	if *killDownFor < maxWait/2 && down1peer < steady1own-0.01 {
		t.Errorf("host-1 attributed %.1f%% of flows towards host-2 during its %s outage, want them held until its claims resume", 100*down1peer, *killDownFor)
	}

	after2 := outcomesOf(v.outcomes, h2, nil, restartAt, watchEnd)
	var perWindow []string
	for w := restartAt; w.Before(watchEnd); w = w.Add(recoveryBucket) {
		r, n := rate(outcomesOf(after2, h2, nil, w, w.Add(recoveryBucket)))
		perWindow = append(perWindow, fmt.Sprintf("%.0f%%/%d", 100*r, n))
	}
	t.Logf("host-2's attribution rate per %s of flow start after the restart began (rate/records): %s", recoveryBucket, strings.Join(perWindow, " "))
	for _, p := range []struct {
		name string
		outs []outcome
	}{{"before the kill", before2}, {"after the restart", after2}} {
		p50, largest := delays(p.outs)
		t.Logf("host-2's records of flows started %s reached the sink %s after the connection's end at the median, %s at most",
			p.name, p50.Round(10*time.Millisecond), largest.Round(10*time.Millisecond))
	}
	at, ok := recovery(after2, steady2, restartAt, watchEnd, recoveryBucket, 3*recoveryBucket)
	if !ok {
		t.Fatalf("host-2's attribution rate did not return to within 1 point of its steady %.1f%% within %s of the restart", 100*steady2, watchFor)
	}
	t.Logf("RECOVERY: host-2's attribution rate is back within 1 point of its steady %.1f%% for flows started %s after its restart began, %s after the SIGKILL (%s windows; outage %s)",
		100*steady2, at.Sub(restartAt).Round(100*time.Millisecond), at.Sub(killAt).Round(100*time.Millisecond), recoveryBucket, *killDownFor)
	if at.Sub(restartAt) > recoveryBound {
		t.Errorf("host-2 took %s to recover, want at most %s", at.Sub(restartAt), recoveryBound)
	}
}
