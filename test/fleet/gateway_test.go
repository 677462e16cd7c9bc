package fleet

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/test/internal/collectortest"
)

const claimTopic = "flowattr-claims"

// kafkaBroker is the in-process Kafka server (kfake, one broker) on a fixed
// loopback port, its log kept in a directory: stopped and started again,
// it comes back at the same address with its topics, like a broker
// restarted on its disk.
type kafkaBroker struct {
	port    int
	dir     string
	cluster *kfake.Cluster // nil while stopped
}

// startKafka starts a broker seeded with the claim topic, stopped when the
// test ends.
func startKafka(t *testing.T) *kafkaBroker {
	t.Helper()
	b := &kafkaBroker{port: collectortest.FreePort(t), dir: t.TempDir()}
	b.start(t)
	t.Cleanup(b.stop)
	return b
}

// start starts the broker on its port and directory: a new one, or the
// stopped one with what it had written.
func (b *kafkaBroker) start(t *testing.T) {
	t.Helper()
	var err error
	b.cluster, err = kfake.NewCluster(kfake.Ports(b.port), kfake.DataDir(b.dir), kfake.SeedTopics(2, claimTopic))
	must(t, err, "starting the in-process Kafka server")
}

// stop closes the broker's listener and its clients' connections, and
// writes its state to its directory.
func (b *kafkaBroker) stop() {
	if b.cluster != nil {
		b.cluster.Close()
		b.cluster = nil
	}
}

// ListenAddrs is where clients reach the broker, running or not.
func (b *kafkaBroker) ListenAddrs() []string { return []string{loopbackAddr(b.port)} }

// gatewayTier is a Kafka cluster, a flow sink and gateways running
// testdata/fleet/gateway.yaml, all on loopback.
type gatewayTier struct {
	kafka    *kafkaBroker
	sink     *collectortest.Sink
	ca       *testCA
	gateways []*gateway
}

type gateway struct {
	name        string
	col         *collectortest.Collector
	agentAddr   string
	metricsAddr string
}

// startGatewayTier starts the Kafka server and one gateway per name, with
// overlay merged over gateway.yaml (sources, max_wait; in ownership and
// ownership/topic alike, as they share a store).
func startGatewayTier(t *testing.T, overlay string, names ...string) *gatewayTier {
	t.Helper()
	collectortest.Binary(t) // skip before starting anything when there is no binary
	kafka := startKafka(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err, "sink listener")
	tier := &gatewayTier{kafka: kafka, sink: collectortest.ServeSink(t, l), ca: newTestCA(t, "flowattr-test-agents")}

	overlayFile := filepath.Join(t.TempDir(), "overlay.yaml")
	must(t, os.WriteFile(overlayFile, []byte(overlay), 0o600), "writing overlay")
	for _, name := range names {
		cert := tier.ca.issue(t, name, net.ParseIP("127.0.0.1"))
		g := &gateway{
			name:        name,
			agentAddr:   loopbackAddr(collectortest.FreePort(t)),
			metricsAddr: loopbackAddr(collectortest.FreePort(t)),
		}
		health := loopbackAddr(collectortest.FreePort(t))
		_, metricsPort, _ := net.SplitHostPort(g.metricsAddr)
		g.col = collectortest.Start(t, collectortest.Options{
			Name:    name,
			Configs: []string{configPath(t, "gateway.yaml"), overlayFile},
			Env: map[string]string{
				"FLOWATTR_GATEWAY_NAME":    name,
				"FLOWATTR_AGENT_ENDPOINT":  g.agentAddr,
				"FLOWATTR_KAFKA_BROKERS":   kafka.ListenAddrs()[0],
				"FLOWATTR_TLS_CA":          tier.ca.File,
				"FLOWATTR_TLS_CERT":        cert.CertFile,
				"FLOWATTR_TLS_KEY":         cert.KeyFile,
				"FLOWATTR_FLOWS_ENDPOINT":  tier.sink.Addr.String(),
				"FLOWATTR_HEALTH_ENDPOINT": health,
				"FLOWATTR_METRICS_PORT":    metricsPort,
			},
		})
		g.col.WaitReady(t, health)
		tier.gateways = append(tier.gateways, g)
	}
	return tier
}

// agentClient is an OTLP client presenting a certificate, as an agent does.
type agentClient struct {
	conn   *grpc.ClientConn
	client plogotlp.GRPCClient
}

func dialAgent(t *testing.T, addr string, cfg *tls.Config) *agentClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	must(t, err, "dialling %s", addr)
	t.Cleanup(func() { conn.Close() })
	return &agentClient{conn: conn, client: plogotlp.NewGRPCClient(conn)}
}

func (a *agentClient) send(ctx context.Context, ld plog.Logs) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := a.client.Export(ctx, plogotlp.NewExportRequestFromLogs(ld))
	return err
}

// claims builds one claim record per claim.
func claims(cs ...flowschema.Claim) plog.Logs {
	ld := plog.NewLogs()
	lrs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	for _, c := range cs {
		flowschema.PutClaim(lrs.AppendEmpty(), c)
	}
	return ld
}

// syntheticFlow is a closed client flow record, as an agent's receiver
// writes it, tagged with a case name.
type syntheticFlow struct {
	name        string
	local, peer string
	localOwner  string
	start       time.Time
}

const caseAttr = "fleet.case"

func flows(fs ...syntheticFlow) plog.Logs {
	ld := plog.NewLogs()
	lrs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	for _, f := range fs {
		lr := lrs.AppendEmpty()
		collectortest.PutClientFlow(lr, collectortest.ClientFlow{
			Local:      netip.MustParseAddr(f.local),
			Peer:       netip.MustParseAddr(f.peer),
			LocalOwner: owners.Owner{ID: f.localOwner},
			Start:      f.start,
			End:        f.start.Add(time.Second),
		})
		lr.Attributes().PutStr(caseAttr, f.name)
	}
	return ld
}

// waitForCases waits until the sink holds a record of every named case and
// returns them by case name.
func waitForCases(t *testing.T, sink *collectortest.Sink, timeout time.Duration, names ...string) map[string]collectortest.Record {
	t.Helper()
	got := map[string]collectortest.Record{}
	eventually(timeout, 100*time.Millisecond, func() bool {
		for _, r := range sink.Records() {
			if n := r.Str(caseAttr); n != "" {
				got[n] = r
			}
		}
		for _, n := range names {
			if _, ok := got[n]; !ok {
				return false
			}
		}
		return true
	})
	for _, n := range names {
		if _, ok := got[n]; !ok {
			t.Fatalf("flow %q never reached the sink within %s", n, timeout)
		}
	}
	return got
}

// topicRecords reads every log record published to the claim topic.
func topicRecords(t *testing.T, brokers []string) []collectortest.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(claimTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	must(t, err, "kafka client")
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var out []collectortest.Record
	for ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		fetches.EachRecord(func(r *kgo.Record) {
			var ld plog.ProtoUnmarshaler
			logs, err := ld.UnmarshalLogs(r.Value)
			if err != nil {
				t.Errorf("topic message is not OTLP logs: %v", err)
				return
			}
			out = append(out, collectortest.RecordsOf(logs, r.Timestamp)...)
		})
	}
	return out
}

// TestGatewaysShareClaimsThroughKafka runs two gateways on gateway.yaml
// against an in-process Kafka server: a claim sent by an agent to one
// gateway attributes a flow that another agent sends to the other gateway,
// in both directions, and the topic carries claims only.
func TestGatewaysShareClaimsThroughKafka(t *testing.T) {
	tier := startGatewayTier(t, `
processors:
  ownership:
    max_wait: 20s
  ownership/topic:
    max_wait: 20s
`, "gateway-1", "gateway-2")
	g1, g2 := tier.gateways[0], tier.gateways[1]
	agentA := tier.ca.issue(t, "agent-a")
	agentB := tier.ca.issue(t, "agent-b")
	toG1 := dialAgent(t, g1.agentAddr, tier.ca.clientTLS(agentA))
	toG2 := dialAgent(t, g2.agentAddr, tier.ca.clientTLS(agentB))
	ctx := context.Background()

	now := time.Now()
	checkout := netip.MustParseAddr("10.1.0.7")
	frontend := netip.MustParseAddr("10.2.0.9")
	// Agent A's claim goes to gateway 1 only, agent B's to gateway 2
	// only; each also sends a flow towards the other's address.
	must(t, toG1.send(ctx, claims(flowschema.Claim{Address: checkout, Owner: owners.Owner{ID: "checkout"}, Start: now.Add(-10 * time.Second), End: now, Sender: "agent-a"})), "claim to gateway-1")
	must(t, toG2.send(ctx, claims(flowschema.Claim{Address: frontend, Owner: owners.Owner{ID: "frontend"}, Start: now.Add(-10 * time.Second), End: now, Sender: "agent-b"})), "claim to gateway-2")
	must(t, toG2.send(ctx, flows(syntheticFlow{name: "b-to-checkout", local: frontend.String(), localOwner: "frontend", peer: checkout.String(), start: now.Add(-5 * time.Second)})), "flow to gateway-2")
	must(t, toG1.send(ctx, flows(syntheticFlow{name: "a-to-frontend", local: checkout.String(), localOwner: "checkout", peer: frontend.String(), start: now.Add(-5 * time.Second)})), "flow to gateway-1")

	got := waitForCases(t, tier.sink, 60*time.Second, "b-to-checkout", "a-to-frontend")
	for name, want := range map[string]string{"b-to-checkout": "checkout", "a-to-frontend": "frontend"} {
		r := got[name]
		if st, id := r.Str(flowschema.AttrPeerAttributionStatus), r.Str(flowschema.PrefixPeerOwner+flowschema.OwnerIDSuffix); st != "attributed" || id != want {
			t.Errorf("%s: status %q owner %q (reason %q), want attributed to %q through the other gateway's claim", name, st, id, r.Str(flowschema.AttrPeerAttributionReason), want)
		}
	}

	// Each gateway applied the other's claim from Kafka. The collector's
	// metrics do not tell the processor instances apart, so count them all:
	// its own agent's claim twice (logs/flows and logs/claims-out) and
	// both claims from the topic (logs/claims-in), its own included.
	for _, g := range tier.gateways {
		m := g.col.Metrics(t, g.metricsAddr)
		if applied := collectortest.MetricSum(m, "otelcol_processor_ownership_claims_applied"); applied < 4 {
			t.Errorf("%s applied %v claims, want at least 4 (2 from its agent, 2 from the topic)", g.name, applied)
		}
		// gateway.yaml applies no local claims: the agents' flows reach
		// one gateway each, their claims every gateway.
		if applied := collectortest.MetricSum(m, "otelcol_processor_ownership_local_claims_applied"); applied != 0 {
			t.Errorf("%s applied %v local claims of flows, want 0 (apply_local_claims: false)", g.name, applied)
		}
	}

	published := topicRecords(t, tier.kafka.ListenAddrs())
	var hb int
	for _, r := range published {
		if r.EventName != flowschema.EventClaim {
			t.Errorf("the claim topic carries a %q record: %v", r.EventName, r.Attrs)
			continue
		}
		hb++
	}
	if hb != 2 {
		t.Errorf("topic holds %d claim records, want 2 (one per agent claim)", hb)
	}
	t.Logf("topic: %d claim records, %d other; flows attributed across gateways: %d", hb, len(published)-hb, len(got))
}
