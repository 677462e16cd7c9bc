package fleet

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/test/internal/collectortest"
)

// Load and timing of the broker restart scenario.
const (
	brokerClaimAddrs    = 500 // addresses agent-a claims, each once per brokerClaimInterval
	brokerClaimInterval = time.Second
	brokerFlowInterval  = 100 * time.Millisecond // agent-b sends brokerFlowsPerTick flows this often
	brokerFlowsPerTick  = 5
	brokerSteadyFor     = 5 * time.Second
	brokerAfterFor      = 10 * time.Second
	// gatewayMaxWait is gateway.yaml's max_wait.
	gatewayMaxWait = 30 * time.Second
	// brokerBacklogWithin bounds, generously, the time from the broker's
	// return until gateway-2 has read the claims published meanwhile: the
	// exporter's next retry (2 s at most), the clients' reconnections and
	// a fetch (about 5 s here).
	brokerBacklogWithin = 10 * time.Second
)

// brokerDownFor is how long TestGatewayKafkaBrokerRestart keeps the broker
// stopped.
var brokerDownFor = flag.Duration("broker-down", 10*time.Second, "how long TestGatewayKafkaBrokerRestart keeps the Kafka broker stopped")

// claimKey identifies one claim record: who, which address, which time.
type claimKey struct {
	addr       string
	start, end int64
}

// sentFlow is a flow record agent-b sent, and the owner its peer had.
type sentFlow struct {
	peerOwner string
	sentAt    time.Time
	phase     string
}

// TestGatewayKafkaBrokerRestart runs two gateways (gateway.yaml) under a
// steady load of claims into gateway-1 and of flows into gateway-2, whose
// peers only gateway-1's claims, passed on through Kafka, can attribute.
// The broker stops for 10 s and starts again on its log. The test checks
// what a user sees: every claim gateway-1 accepted reaches the topic, those
// of the outage once the broker is back (gateway-1's exporter queues and
// retries them; no send or enqueue failure is counted); every flow reaches
// the sink once, attributed to the right owner, those of the outage once
// their claims arrive; the exporter's retries are logged.
func TestGatewayKafkaBrokerRestart(t *testing.T) {
	tier := startGatewayTier(t, "", "gateway-1", "gateway-2")
	g1, g2 := tier.gateways[0], tier.gateways[1]
	toG1 := dialAgent(t, g1.agentAddr, tier.ca.clientTLS(tier.ca.issue(t, "agent-a")))
	toG2 := dialAgent(t, g2.agentAddr, tier.ca.clientTLS(tier.ca.issue(t, "agent-b")))
	// Claims go on a little after the flows stop, so that the last flows'
	// clock_skew window is claimed too.
	claimsCtx, stopClaims := context.WithCancel(context.Background())
	t.Cleanup(stopClaims)
	ctx, cancel := context.WithCancel(claimsCtx)
	t.Cleanup(cancel)
	t0 := time.Now()
	step := func(what string) { t.Logf("%5.1fs %s", time.Since(t0).Seconds(), what) }

	addrs := make([]netip.Addr, brokerClaimAddrs)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, 1, byte(i / 250), byte(1 + i%250)})
	}
	ownerOf := func(i int) string { return fmt.Sprintf("svc-%d", i) }

	var (
		mu      sync.Mutex
		phase   = "steady"
		sent    = map[claimKey]string{} // claim -> phase it was sent in
		flowsTo = map[string]sentFlow{} // case name -> flow
		sendErr []error
	)
	setPhase := func(p string) { mu.Lock(); phase = p; mu.Unlock() }
	var claimsDone, flowsDone sync.WaitGroup
	// agent-a claims every address once per interval, for the interval
	// just closed, as the ebpfflow receiver does.
	claimsDone.Add(1)
	go func() {
		defer claimsDone.Done()
		tick := time.NewTicker(brokerClaimInterval)
		defer tick.Stop()
		// The addresses were held since well before the first flow.
		from := time.Now().Add(-10 * time.Second)
		for claimsCtx.Err() == nil {
			select {
			case <-claimsCtx.Done():
				return
			case <-tick.C:
			}
			to := time.Now()
			cs := make([]flowschema.Claim, len(addrs))
			for i, a := range addrs {
				cs[i] = flowschema.Claim{Address: a, Owner: owners.Owner{ID: ownerOf(i)}, Start: from, End: to, Sender: "agent-a"}
			}
			err := toG1.send(claimsCtx, claims(cs...))
			mu.Lock()
			if err != nil && claimsCtx.Err() == nil {
				sendErr = append(sendErr, fmt.Errorf("claims to gateway-1: %w", err))
			}
			for _, c := range cs {
				sent[claimKey{c.Address.String(), c.Start.UnixNano(), c.End.UnixNano()}] = phase
			}
			mu.Unlock()
			from = to
		}
	}()
	// agent-b's flows started a moment ago towards agent-a's addresses:
	// gateway-2 holds each until agent-a's claim covering its start
	// arrives from the topic.
	flowsDone.Add(1)
	go func() {
		defer flowsDone.Done()
		tick := time.NewTicker(brokerFlowInterval)
		defer tick.Stop()
		for n := 0; ctx.Err() == nil; {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			now := time.Now()
			fs := make([]syntheticFlow, brokerFlowsPerTick)
			mu.Lock()
			for i := range fs {
				peer := n % len(addrs)
				fs[i] = syntheticFlow{name: fmt.Sprintf("flow-%d", n), local: "10.2.0.9", localOwner: "frontend", peer: addrs[peer].String(), start: now.Add(-200 * time.Millisecond)}
				flowsTo[fs[i].name] = sentFlow{peerOwner: ownerOf(peer), sentAt: now, phase: phase}
				n++
			}
			mu.Unlock()
			if err := toG2.send(ctx, flows(fs...)); err != nil && ctx.Err() == nil {
				mu.Lock()
				sendErr = append(sendErr, fmt.Errorf("flows to gateway-2: %w", err))
				mu.Unlock()
			}
		}
	}()
	stopLoad := sync.OnceFunc(func() {
		cancel()
		flowsDone.Wait()
		time.Sleep(2 * brokerClaimInterval)
		stopClaims()
		claimsDone.Wait()
	})
	t.Cleanup(stopLoad)

	step("steady load")
	time.Sleep(brokerSteadyFor)
	const exporter = "kafka/claims"
	metrics1 := func() string { return g1.col.Metrics(t, g1.metricsAddr) }
	setPhase("down")
	downAt := time.Now()
	tier.kafka.stop()
	step("Kafka broker stopped")
	// gateway-1 queues the claims; gateway-2 holds the flows that wait
	// for them.
	heldBefore := collectortest.MetricSum(g2.col.Metrics(t, g2.metricsAddr), "otelcol_processor_ownership_records_held")
	var queued, held float64
	eventually(*brokerDownFor, 200*time.Millisecond, func() bool {
		queued = max(queued, collectortest.MetricSum(metrics1(), "otelcol_exporter_queue_size", "exporter", exporter))
		held = max(held, collectortest.MetricSum(g2.col.Metrics(t, g2.metricsAddr), "otelcol_processor_ownership_records_held"))
		return time.Since(downAt) >= *brokerDownFor
	})
	step(fmt.Sprintf("gateway-1 had up to %.0f claims queued for the topic; gateway-2 held up to %.0f flow records (%.0f before the stop)", queued, held, heldBefore))
	if queued == 0 || held <= heldBefore {
		t.Errorf("while the broker was down, gateway-1 queued %.0f claims and gateway-2 held %.0f records (%.0f before), want both to grow", queued, held, heldBefore)
	}
	setPhase("back")
	tier.kafka.start(t)
	backAt := time.Now()
	step("Kafka broker started again")
	drained := eventually(brokerAfterFor, 200*time.Millisecond, func() bool {
		return collectortest.MetricSum(metrics1(), "otelcol_exporter_queue_size", "exporter", exporter) == 0
	})
	step(fmt.Sprintf("gateway-1's queue for the topic drained: %v", drained))
	time.Sleep(time.Until(backAt.Add(brokerAfterFor)))
	stopLoad()
	step("load stopped")

	mu.Lock()
	defer mu.Unlock()
	for _, err := range sendErr {
		t.Errorf("agent: %v", err)
	}
	// Every flow reaches the sink; wait for the last ones, held for
	// their claims.
	var got map[string]collectortest.Record
	eventually(60*time.Second, 200*time.Millisecond, func() bool {
		got = map[string]collectortest.Record{}
		for _, r := range tier.sink.Records() {
			if n := r.Str(caseAttr); n != "" {
				if _, dup := got[n]; dup {
					t.Errorf("flow %s reached the sink twice", n)
				}
				got[n] = r
			}
		}
		return len(got) >= len(flowsTo)
	})
	step(fmt.Sprintf("%d of %d flows reached the sink", len(got), len(flowsTo)))
	// A flow sent more than max_wait before the broker's return, less the
	// time to publish and read the backlog, is released unattributed
	// (not_yet_covered) before its claim arrives: only with outages
	// longer than that, never with the default one.
	waitedOut := backAt.Add(brokerBacklogWithin - gatewayMaxWait)
	type tally struct {
		sent, arrived, attributed, waitedOut int
		slowest                              time.Duration // from sending to arrival
		lastAttributed                       time.Time
	}
	byPhase := map[string]*tally{}
	for name, f := range flowsTo {
		tl := byPhase[f.phase]
		if tl == nil {
			tl = &tally{}
			byPhase[f.phase] = tl
		}
		tl.sent++
		r, ok := got[name]
		if !ok {
			continue
		}
		tl.arrived++
		tl.slowest = max(tl.slowest, r.Received.Sub(f.sentAt))
		st, id := r.Str(flowschema.AttrPeerAttributionStatus), r.Str(flowschema.PrefixPeerOwner+flowschema.OwnerIDSuffix)
		switch {
		case st == "attributed" && id == f.peerOwner:
			tl.attributed++
			if r.Received.After(tl.lastAttributed) {
				tl.lastAttributed = r.Received
			}
		case st == "attributed":
			t.Errorf("flow %s (%s) MISATTRIBUTED to %q, peer owner %q", name, f.phase, id, f.peerOwner)
		case id != "":
			t.Errorf("flow %s (%s) is %s with owner %q", name, f.phase, st, id)
		case f.sentAt.Before(waitedOut):
			tl.waitedOut++
		default:
			t.Errorf("flow %s (%s) %s (%s), want attributed to %q", name, f.phase, st, r.Str(flowschema.AttrPeerAttributionReason), f.peerOwner)
		}
	}
	for _, p := range []string{"steady", "down", "back"} {
		tl := byPhase[p]
		if tl == nil {
			t.Fatalf("no flow sent in phase %s", p)
		}
		t.Logf("flows sent %-6s: %d, reached the sink %d, attributed %d, unattributed after waiting max_wait for the broker %d; slowest %s after it was sent",
			p, tl.sent, tl.arrived, tl.attributed, tl.waitedOut, tl.slowest.Round(100*time.Millisecond))
		if tl.arrived != tl.sent {
			t.Errorf("%d of the %d flows sent %s never reached the sink", tl.sent-tl.arrived, tl.sent, p)
		}
	}
	t.Logf("RECOVERY: the flows held while the broker was down (%s) were out, attributed, %s after it started again",
		*brokerDownFor, byPhase["down"].lastAttributed.Sub(backAt).Round(100*time.Millisecond))

	// Every claim gateway-1 accepted is in the topic, once or more (a
	// retried produce may have written it already), once its exporter
	// has sent them all.
	m1 := metrics1()
	eventually(30*time.Second, 200*time.Millisecond, func() bool {
		m1 = metrics1()
		return collectortest.MetricSum(m1, "otelcol_exporter_sent_log_records", "exporter", exporter) >= float64(len(sent))
	})
	step("gateway-1's exporter has sent every claim")
	published := map[claimKey]int{}
	for _, r := range topicRecords(t, tier.kafka.ListenAddrs()) {
		published[claimKey{r.Str(flowschema.AttrClaimAddress), r.Int(flowschema.AttrClaimStartTime), r.Int(flowschema.AttrClaimEndTime)}]++
	}
	missing := map[string]int{}
	dups := 0
	for k, p := range sent {
		switch n := published[k]; {
		case n == 0:
			missing[p]++
		case n > 1:
			dups += n - 1
		}
	}
	t.Logf("claims sent %d, in the topic %d distinct (%d duplicates written by retries)", len(sent), len(published), dups)
	for p, n := range missing {
		t.Errorf("%d claims sent %s are not in the topic", n, p)
	}

	m2 := g2.col.Metrics(t, g2.metricsAddr)
	for _, name := range []string{"otelcol_exporter_send_failed_log_records", "otelcol_exporter_enqueue_failed_log_records"} {
		if n := collectortest.MetricSum(m1, name, "exporter", exporter); n != 0 {
			t.Errorf("gateway-1 %s{exporter=%q} = %.0f, want 0: claims dropped", name, exporter, n)
		}
	}
	t.Logf("gateway-1 exported %.0f claim records to the topic; gateway-2 read %.0f from it",
		collectortest.MetricSum(m1, "otelcol_exporter_sent_log_records", "exporter", exporter),
		collectortest.MetricSum(m2, "otelcol_receiver_accepted_log_records", "receiver", "kafka/claims"))
	// What an operator reads in the logs: gateway-1's exporter retrying,
	// both gateways' consumers failing to fetch.
	if line := firstLine(g1.col.Output(), retryLog, `"otelcol.component.id": "kafka/claims", "otelcol.component.kind": "exporter"`); line == "" {
		t.Errorf("gateway-1 did not log its exporter's retries while the broker was down")
	} else {
		t.Logf("gateway-1 logs: %s", line)
	}
	for _, g := range tier.gateways {
		if line := firstLine(g.col.Output(), "consumer fetch error"); line == "" {
			t.Errorf("%s did not log its consumer's failures while the broker was down", g.name)
		} else {
			t.Logf("%s logs: %s", g.name, line)
		}
	}
}
