package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/test/internal/collectortest"
)

// idAttr carries each flow record's unique number, so that the sink can
// tell a record delivered twice from two records.
const idAttr = "e2e.id"

// refusingSink is an OTLP/gRPC logs server that refuses whole requests
// with UNAVAILABLE, as a backend under load does and as the collector's
// memory_limiter refuses data, while refusing is set; otherwise it counts
// every flow record it accepts by id.
type refusingSink struct {
	plogotlp.UnimplementedGRPCServer

	mu       sync.Mutex
	refusing bool
	refused  int           // records refused
	accepted int           // records accepted, flows or not
	ids      map[int64]int // deliveries of each flow record
}

func (s *refusingSink) Export(_ context.Context, req plogotlp.ExportRequest) (plogotlp.ExportResponse, error) {
	ld := req.Logs()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refusing {
		s.refused += ld.LogRecordCount()
		return plogotlp.NewExportResponse(), status.Error(codes.Unavailable, "refusing for the test")
	}
	s.accepted += ld.LogRecordCount()
	for _, rl := range ld.ResourceLogs().All() {
		for _, sl := range rl.ScopeLogs().All() {
			for _, lr := range sl.LogRecords().All() {
				if id, ok := lr.Attributes().Get(idAttr); ok {
					s.ids[id.Int()]++
				}
			}
		}
	}
	return plogotlp.NewExportResponse(), nil
}

func (s *refusingSink) refuse(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refusing = on
}

// counts returns what the sink has seen: records refused and accepted, and
// distinct flow ids accepted.
func (s *refusingSink) counts() (refused, accepted, distinct int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused, s.accepted, len(s.ids)
}

// TestBackPressureExactlyOnce drives the built collector, whose ownership
// processor hands records straight to an exporter without a queue or
// retries (testdata/e2e-backpressure.yaml), while the exporter's backend
// refuses everything for a while. Held records that claims release into
// the refusal wait in the processor's outbox and go on once the backend
// accepts again; batches refused whole are retried by the client, their
// held records leaving the hold unsent each time. Every flow record
// carries a unique id: each must arrive exactly once, also after the
// collector has shut down, and the processor's counters must agree with
// what the sink saw.
func TestBackPressureExactlyOnce(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sink := &refusingSink{ids: make(map[int64]int)}
	srv := grpc.NewServer()
	plogotlp.RegisterGRPCServer(srv, sink)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)

	otlpPort, healthPort, metricsPort := collectortest.FreePort(t), collectortest.FreePort(t), collectortest.FreePort(t)
	col := collectortest.Start(t, collectortest.Options{
		Configs: []string{"../../testdata/e2e-backpressure.yaml"},
		Env: map[string]string{
			"FLOWATTR_E2E_OTLP_PORT":    strconv.Itoa(otlpPort),
			"FLOWATTR_E2E_HEALTH_PORT":  strconv.Itoa(healthPort),
			"FLOWATTR_E2E_METRICS_PORT": strconv.Itoa(metricsPort),
			"FLOWATTR_E2E_SINK_PORT":    strconv.Itoa(l.Addr().(*net.TCPAddr).Port),
		},
	})
	metricsAddr := "127.0.0.1:" + strconv.Itoa(metricsPort)
	col.WaitReady(t, "127.0.0.1:"+strconv.Itoa(healthPort))

	client := dialOTLP(t, otlpPort)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var (
		incoming int // records in every export attempt, retries included
		flows    int // distinct flow records sent
	)
	var attempts atomic.Int64 // refused export attempts
	// export sends ld until the collector accepts it, as an OTLP client
	// with retries does; it counts the records of every attempt.
	export := func(ld plog.Logs) {
		t.Helper()
		for {
			incoming += ld.LogRecordCount()
			_, err := client.Export(ctx, plogotlp.NewExportRequestFromLogs(ld))
			if err == nil {
				return
			}
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("export: %v, want success or UNAVAILABLE", err)
			}
			attempts.Add(1)
			select {
			case <-ctx.Done():
				t.Fatalf("export still refused: %v", err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	frontend := owner("frontend", "frontend")
	local := netip.MustParseAddr("10.1.0.1")
	addr := func(subnet byte, i int) netip.Addr {
		return netip.AddrFrom4([4]byte{10, subnet, byte(i / 250), byte(i%250 + 1)})
	}
	newBatch := func() (plog.Logs, plog.LogRecordSlice) {
		ld := plog.NewLogs()
		return ld, ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	}
	putFlow := func(lrs plog.LogRecordSlice, peer netip.Addr, start time.Time) {
		flows++
		lr := lrs.AppendEmpty()
		collectortest.PutClientFlow(lr, collectortest.ClientFlow{Local: local, Peer: peer, LocalOwner: frontend, Start: start, End: time.Now()})
		lr.Attributes().PutInt(idAttr, int64(flows))
	}
	claimAll := func(subnet byte, n int, start, end time.Time) {
		ld, lrs := newBatch()
		for i := range n {
			flowschema.PutClaim(lrs.AppendEmpty(), flowschema.Claim{Address: addr(subnet, i), Owner: owner(fmt.Sprintf("svc-%d-%d", subnet, i), "svc"), Start: start, End: end, Sender: "node-b"})
		}
		export(ld)
	}
	metric := func(name string, labels ...string) float64 {
		return collectortest.MetricSum(col.Metrics(t, metricsAddr), name, labels...)
	}
	waitMetric := func(name string, want float64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for got := metric(name); got != want; got = metric(name) {
			if time.Now().After(deadline) {
				t.Fatalf("%s = %v, want %v", name, got, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// 1. Fresh flows to peers nobody has claimed yet: all held, and their
	// batch, left empty, goes nowhere.
	const held, mixed = 300, 100
	ld, lrs := newBatch()
	for i := range held {
		putFlow(lrs, addr(3, i), time.Now().Add(-time.Second))
	}
	export(ld)
	waitMetric("otelcol_processor_ownership_records_held", held)

	// 2. The backend refuses; the peers' claims release every held record
	// into the refusal, and they wait in the outbox.
	sink.refuse(true)
	claimed := time.Now()
	claimAll(3, held, claimed.Add(-time.Minute), claimed)
	waitMetric("otelcol_processor_ownership_records_awaiting_resend", held)
	waitMetric("otelcol_processor_ownership_records_held", 0)

	// 3. Still refusing: a batch with records attributed at once (their
	// peers were claimed in step 2) and records held (peers unclaimed) is
	// refused whole and retried by the client; the sink accepts again
	// after a few attempts.
	ld, lrs = newBatch()
	for i := range mixed {
		putFlow(lrs, addr(3, i), claimed.Add(-10*time.Second))
		putFlow(lrs, addr(5, i), time.Now().Add(-time.Second))
	}
	go func() {
		// After the batch's first two attempts, both refused.
		deadline := time.Now().Add(30 * time.Second)
		for attempts.Load() < 2 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		sink.refuse(false)
	}()
	export(ld)
	if n := attempts.Load(); n < 2 {
		t.Fatalf("the mixed batch was refused %d times, want at least 2", n)
	}
	waitMetric("otelcol_processor_ownership_records_held", mixed)

	// 4. Their claims release the records the accepted attempt held.
	claimAll(5, mixed, time.Now().Add(-time.Minute), time.Now())
	deadline := time.Now().Add(30 * time.Second)
	for _, _, distinct := sink.counts(); distinct < flows; _, _, distinct = sink.counts() {
		if time.Now().After(deadline) {
			t.Fatalf("the sink has %d of %d flow records", distinct, flows)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitMetric("otelcol_processor_ownership_records_awaiting_resend", 0)
	waitMetric("otelcol_processor_ownership_records_held", 0)

	// The counters agree with the sink: every attempt of the processor is
	// an outgoing item, accepted or refused; every record held and not
	// withdrawn with a refused batch was released by its claim; nothing
	// was lost.
	refused, accepted, _ := sink.counts()
	m := col.Metrics(t, metricsAddr)
	for _, c := range []struct {
		name   string
		labels []string
		want   int
	}{
		{"otelcol_processor_incoming_items", nil, incoming},
		{"otelcol_processor_outgoing_items", nil, refused + accepted},
		{"otelcol_processor_ownership_records_released", []string{"outcome", "attributed"}, held + mixed},
		{"otelcol_processor_ownership_records_released", nil, held + mixed},
		{"otelcol_processor_ownership_release_failures", nil, 0},
	} {
		if got := collectortest.MetricSum(m, c.name, c.labels...); got != float64(c.want) {
			t.Errorf("%s%v = %v, want %d", c.name, c.labels, got, c.want)
		}
	}

	// Shutdown flushes nothing more: each record arrived exactly once.
	col.Stop(t)
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.accepted != flows {
		t.Errorf("the sink accepted %d records, want the %d flow records", sink.accepted, flows)
	}
	for id := 1; id <= flows; id++ {
		if n := sink.ids[int64(id)]; n != 1 {
			t.Errorf("flow record %d arrived %d times", id, n)
		}
	}
	t.Logf("%d flow records, %d records refused by the sink, %d refused attempts of the retried batch", flows, refused, attempts.Load())
}
