//go:build linux

package perf

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/plog"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/test/internal/collectortest"
)

const (
	// floodMaxKeys is max_keys in testdata/perf/flood.yaml.
	floodMaxKeys = 100_000
	// floodKeys is the flood: claims for this many distinct addresses,
	// each with an owner of its own, twenty times max_keys.
	floodKeys = 2_000_000
	// floodBatch claims go in one request, floodSenders requests at a time.
	floodBatch   = 5000
	floodSenders = 2
	// floodSlack and floodRatio bound the flood's peak RSS against the
	// baseline's: at most floodRatio times it plus floodSlack.
	floodSlack = 64 << 20
	floodRatio = 1.5
	// healthEvery is how often the test asks health_check whether the
	// collector still serves while it floods it; healthTimeout is how long
	// one answer may take.
	healthEvery   = 250 * time.Millisecond
	healthTimeout = 5 * time.Second
)

// TestFloodMemory checks that max_keys bounds the collector's memory
// whatever the owners: a rogue or broken peer sending claims for 2M
// distinct addresses, each with its own owner, to a collector with
// max_keys 100000 (testdata/perf/flood.yaml) must not take more than 1.5
// times the peak resident memory (VmHWM) of the same collector sent 100k
// such claims, plus 64 MiB. Each run is a fresh collector process. While
// the flood goes on every export must succeed and health_check must keep
// answering; afterwards a claim for a fresh address must be applied and
// used: a flow whose peer is that address comes out attributed to its owner.
func TestFloodMemory(t *testing.T) {
	collectortest.Binary(t)
	if testing.Short() {
		t.Skip("SKIPPING the claim flood under -short: it sends 2.1M claims to the built collector")
	}
	base := runFlood(t, floodMaxKeys)
	flood := runFlood(t, floodKeys)
	bound := int64(floodRatio*float64(base.hwm)) + floodSlack
	t.Logf("peak RSS: %d MiB with %d keys, %d MiB with %d keys (%.2fx); bound %.1fx + %d MiB = %d MiB",
		base.hwm>>20, floodMaxKeys, flood.hwm>>20, floodKeys, float64(flood.hwm)/float64(base.hwm),
		floodRatio, floodSlack>>20, bound>>20)
	if flood.hwm > bound {
		t.Errorf("peak RSS with %d distinct keys and owners is %d MiB, over %.1f x %d MiB + %d MiB = %d MiB: memory follows the flood, not max_keys (live heap %d MiB after the flood, %d MiB after the baseline; %s=DIR saves heap profiles)",
			floodKeys, flood.hwm>>20, floodRatio, base.hwm>>20, floodSlack>>20, bound>>20, flood.heap>>20, base.heap>>20, profileDirEnv)
	}
}

// floodRun is what one collector took in.
type floodRun struct {
	hwm, rss, heap int64 // peak and current VmRSS, live heap after a GC; bytes
	fill           time.Duration
	// CPU time of the collector and of the test process (making and
	// sending the claims) while flooding.
	colCPU, ownCPU time.Duration
	health         healthStats
}

// runFlood starts a collector on flood.yaml, sends it claims for keys
// distinct addresses with distinct owners while checking that it keeps
// serving, checks that a fresh claim is still applied and used, and returns
// its memory.
func runFlood(t *testing.T, keys int) floodRun {
	sink := collectortest.StartSink(t)
	col := startCollector(t, "../../testdata/perf/flood.yaml", map[string]string{
		"FLOWATTR_PERF_SINK_PORT": strconv.Itoa(int(sink.Addr.Port())),
	})
	client := dialOTLP(t, col.otlpPort)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	var run floodRun
	now := time.Now()
	probe := watchHealth(col)
	start, colCPU, ownCPU := time.Now(), col.cpuTime(t), selfCPU(t)
	err := sendFlood(ctx, client, keys, now.Add(-5*time.Minute), now.Add(-time.Minute))
	run.fill = time.Since(start)
	run.colCPU, run.ownCPU = col.cpuTime(t)-colCPU, selfCPU(t)-ownCPU
	run.health = probe.stop()
	if err != nil {
		t.Fatalf("flooding %d keys after %s: %v", keys, run.fill, err)
	}
	if run.health.failures > 0 || run.health.answers == 0 {
		t.Errorf("health_check during the flood: %d answers, %d failures (last: %v)", run.health.answers, run.health.failures, run.health.lastErr)
	}

	checkFreshClaim(ctx, t, client, sink, now)

	// The fresh claim and the local side of its flow are two more keys: once
	// the store is full, each pushes out one of the flood's.
	metrics := col.Metrics(t, loopback(col.metricsPort))
	keysNow := keys + 2
	// Gauges and counters without attributes, then counters summed over
	// theirs.
	for name, want := range map[string]int{
		"otelcol_processor_ownership_keys":      min(keysNow, floodMaxKeys),
		"otelcol_processor_ownership_evictions": max(keysNow-floodMaxKeys, 0),
	} {
		if got, _, err := promValue(metrics, name); err != nil || int(got) != want {
			t.Errorf("%s = %v (%v), want %d; the processor's metrics:\n%s", name, got, err, want, ownershipMetrics(metrics))
		}
	}
	for name, want := range map[string]int{
		"otelcol_processor_ownership_claims_applied":       keys + 1, // the flood's and the fresh claim
		"otelcol_processor_ownership_local_claims_applied": 1,        // the local side of the fresh flow
		"otelcol_processor_ownership_claims_rejected":      0,
	} {
		if got := collectortest.MetricSum(metrics, name); int(got) != want {
			t.Errorf("%s = %v, want %d; the processor's metrics:\n%s", name, got, want, ownershipMetrics(metrics))
		}
	}

	mem := col.memory(t)
	run.hwm, run.rss = mem.hwm, mem.rss
	if run.heap, err = heapAfterGC(ctx, col); err != nil {
		t.Error(err)
	}
	if dir := os.Getenv(profileDirEnv); dir != "" {
		saveHeapProfile(ctx, t, col, filepath.Join(dir, fmt.Sprintf("flood-%d.heap.pprof", keys)))
	}
	t.Logf("%d keys: filled in %s (%.0f claims/s; CPU: collector %s, test %s); peak RSS %d MiB, RSS %d MiB, live heap after GC %d MiB; health_check answered %d times during the flood, slowest %s",
		keys, run.fill.Round(time.Millisecond), float64(keys)/run.fill.Seconds(), run.colCPU, run.ownCPU,
		run.hwm>>20, run.rss>>20, run.heap>>20, run.health.answers, run.health.slowest.Round(time.Millisecond))
	col.Stop(t)
	return run
}

// saveHeapProfile saves the collector's heap profile, taken after a GC, at
// path, for `go tool pprof` (-sample_index=alloc_space for what the run
// allocated, inuse_space for what it holds).
func saveHeapProfile(ctx context.Context, t *testing.T, col *collector, path string) {
	t.Helper()
	body, err := col.Get(ctx, loopback(col.pprofPort), "/debug/pprof/heap?gc=1")
	if err != nil {
		t.Fatalf("heap profile: %v", err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("heap profile of the collector in %s", path)
}

// ownershipMetrics returns the ownership processor's samples in the
// collector's metrics, for messages.
func ownershipMetrics(exposition string) string {
	var b strings.Builder
	for line := range strings.Lines(exposition) {
		if strings.HasPrefix(line, "otelcol_processor_ownership_") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// floodOwner is the owner that address i's claim names: one of its own,
// with the attributes a pod would have.
func floodOwner(i int) owners.Owner {
	return owners.Owner{ID: fmt.Sprintf("rogue-%d", i), Attributes: []owners.Attribute{
		{Name: "k8s.namespace.name", Value: "flood"},
		{Name: "service.name", Value: fmt.Sprintf("rogue-service-%d", i)},
	}}
}

// floodClaims builds claims for addresses [from, to), each by its own owner,
// over [start, end]: what encodeFlood encodes, built with pdata, to check it
// against.
func floodClaims(from, to int, start, end time.Time) plog.Logs {
	ld := plog.NewLogs()
	lrs := newScope(ld, "flood")
	lrs.EnsureCapacity(to - from)
	for i := from; i < to; i++ {
		flowschema.PutClaim(lrs.AppendEmpty(), flowschema.Claim{
			Address: address(i),
			Owner:   floodOwner(i),
			Start:   start,
			End:     end,
			Sender:  "rogue",
		})
	}
	return ld
}

// floodEncoder encodes the claims floodClaims builds as an
// ExportLogsServiceRequest, directly with protowire and into buffers it
// reuses: building pdata and marshalling it costs the test about 12 µs a
// claim under the race detector (2 µs without), and fresh megabyte buffers
// for every request cost the race detector as much again, which would make
// the flood's time the test's, not the collector's. TestEncodeFlood checks
// the two encodings against each other.
type floodEncoder struct {
	records, record, req []byte
	scratch              []byte // an address or an owner's name
}

// encode returns the request for addresses [from, to) over [start, end],
// valid until the next call.
func (e *floodEncoder) encode(from, to int, start, end time.Time) []byte {
	const (
		ownerID        = flowschema.PrefixClaimOwner + flowschema.OwnerIDSuffix
		ownerNamespace = flowschema.PrefixClaimOwner + "k8s.namespace.name"
		ownerService   = flowschema.PrefixClaimOwner + "service.name"
	)
	e.records = e.records[:0]
	for i := from; i < to; i++ {
		r := e.record[:0]
		r = protowire.AppendTag(r, 1, protowire.Fixed64Type) // time_unix_nano
		r = protowire.AppendFixed64(r, uint64(end.UnixNano()))
		e.scratch = address(i).AppendTo(e.scratch[:0])
		r = appendStrAttr(r, 6, flowschema.AttrClaimAddress, e.scratch)
		r = appendIntAttr(r, 6, flowschema.AttrClaimStartTime, start.UnixNano())
		r = appendIntAttr(r, 6, flowschema.AttrClaimEndTime, end.UnixNano())
		r = appendStrAttr(r, 6, flowschema.AttrClaimSender, "rogue")
		e.scratch = strconv.AppendInt(append(e.scratch[:0], "rogue-"...), int64(i), 10)
		r = appendStrAttr(r, 6, ownerID, e.scratch)
		r = appendStrAttr(r, 6, ownerNamespace, "flood")
		e.scratch = strconv.AppendInt(append(e.scratch[:0], "rogue-service-"...), int64(i), 10)
		r = appendStrAttr(r, 6, ownerService, e.scratch)
		r = protowire.AppendTag(r, 12, protowire.BytesType) // event_name
		r = protowire.AppendString(r, flowschema.EventClaim)
		e.records = protowire.AppendTag(e.records, 2, protowire.BytesType) // ScopeLogs.log_records
		e.records = protowire.AppendBytes(e.records, r)
		e.record = r
	}
	// The small messages around the records, then the request written
	// once: ExportLogsServiceRequest{resource_logs: ResourceLogs{resource,
	// scope_logs: ScopeLogs{scope, log_records...}}}.
	scope := protowire.AppendTag(nil, 1, protowire.BytesType) // InstrumentationScope.name
	scope = protowire.AppendString(scope, "github.com/flowattr/flowattr/receiver/ebpfflowreceiver")
	resource := appendStrAttr(nil, 1, "host.name", "flood") // Resource.attributes
	resource = appendStrAttr(resource, 1, "os.type", "linux")
	scopeLogs := protowire.SizeTag(1) + protowire.SizeBytes(len(scope)) + len(e.records)
	resourceLogs := protowire.SizeTag(1) + protowire.SizeBytes(len(resource)) + protowire.SizeTag(2) + protowire.SizeBytes(scopeLogs)
	req := e.req[:0]
	req = protowire.AppendTag(req, 1, protowire.BytesType) // ExportLogsServiceRequest.resource_logs
	req = protowire.AppendVarint(req, uint64(resourceLogs))
	req = protowire.AppendTag(req, 1, protowire.BytesType) // ResourceLogs.resource
	req = protowire.AppendBytes(req, resource)
	req = protowire.AppendTag(req, 2, protowire.BytesType) // ResourceLogs.scope_logs
	req = protowire.AppendVarint(req, uint64(scopeLogs))
	req = protowire.AppendTag(req, 1, protowire.BytesType) // ScopeLogs.scope
	req = protowire.AppendBytes(req, scope)
	req = append(req, e.records...)
	e.req = req
	return req
}

// appendStrAttr appends a KeyValue with a string value as field num of a
// message.
func appendStrAttr[V string | []byte](b []byte, num protowire.Number, key string, value V) []byte {
	anyValue := protowire.SizeTag(1) + protowire.SizeBytes(len(value))
	b = appendKey(b, num, key, anyValue)
	b = protowire.AppendTag(b, 1, protowire.BytesType) // AnyValue.string_value
	b = protowire.AppendVarint(b, uint64(len(value)))
	return append(b, value...)
}

// appendIntAttr appends a KeyValue with an int value as field num of a
// message.
func appendIntAttr(b []byte, num protowire.Number, key string, value int64) []byte {
	anyValue := protowire.SizeTag(3) + protowire.SizeVarint(uint64(value))
	b = appendKey(b, num, key, anyValue)
	b = protowire.AppendTag(b, 3, protowire.VarintType) // AnyValue.int_value
	return protowire.AppendVarint(b, uint64(value))
}

// appendKey appends a KeyValue's start, up to its value's length: field num
// of a message, its length, its key, and its value's tag and length.
func appendKey(b []byte, num protowire.Number, key string, anyValue int) []byte {
	kv := protowire.SizeTag(1) + protowire.SizeBytes(len(key)) + protowire.SizeTag(2) + protowire.SizeBytes(anyValue)
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(kv))
	b = protowire.AppendTag(b, 1, protowire.BytesType) // KeyValue.key
	b = protowire.AppendString(b, key)
	b = protowire.AppendTag(b, 2, protowire.BytesType) // KeyValue.value
	return protowire.AppendVarint(b, uint64(anyValue))
}

// sendFlood sends claims for addresses [0, keys) in batches of floodBatch,
// floodSenders requests at a time; every request must be accepted.
func sendFlood(ctx context.Context, c *otlpClient, keys int, start, end time.Time) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range floodSenders {
		wg.Go(func() {
			var enc floodEncoder
			for ctx.Err() == nil {
				lo := int(next.Add(floodBatch)) - floodBatch
				if lo >= keys {
					return
				}
				if err := c.export(ctx, enc.encode(lo, min(lo+floodBatch, keys), start, end)); err != nil {
					cancel(fmt.Errorf("claims for addresses %d-%d: %w", lo, min(lo+floodBatch, keys), err))
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// checkFreshClaim sends a claim for an address outside the flood, then a
// flow whose peer is that address, and requires the flow to come out of the
// collector attributed to the claim's owner.
func checkFreshClaim(ctx context.Context, t *testing.T, client *otlpClient, sink *collectortest.Sink, now time.Time) {
	t.Helper()
	// Outside address(i) for every i < floodKeys (10.0.0.0 to 10.30.132.127).
	peer, local := netip.MustParseAddr("10.255.0.1"), netip.MustParseAddr("10.254.0.1")
	fresh := owners.Owner{ID: "fresh", Attributes: []owners.Attribute{{Name: "service.name", Value: "fresh-service"}}}
	claim := plog.NewLogs()
	flowschema.PutClaim(newScope(claim, "fresh").AppendEmpty(), flowschema.Claim{
		Address: peer, Owner: fresh, Start: now.Add(-time.Minute), End: now, Sender: "fresh",
	})
	flow := plog.NewLogs()
	collectortest.PutClientFlow(newScope(flow, "client").AppendEmpty(), collectortest.ClientFlow{
		Local: local, Peer: peer, LocalOwner: owners.Owner{ID: "client"},
		Start: now.Add(-30 * time.Second), End: now.Add(-20 * time.Second),
	})
	for _, ld := range []plog.Logs{claim, flow} {
		req, err := encode(ld)
		if err == nil {
			err = client.export(ctx, req)
		}
		if err != nil {
			t.Fatalf("sending the fresh claim and its flow: %v", err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if records := sink.Records(); len(records) > 0 {
			r := records[0]
			status, owner := r.Str(flowschema.AttrPeerAttributionStatus), r.Str(flowschema.PrefixPeerOwner+flowschema.OwnerIDSuffix)
			if len(records) != 1 || status != "attributed" || owner != fresh.ID ||
				r.Str(flowschema.PrefixPeerOwner+"service.name") != "fresh-service" {
				t.Fatalf("after the flood the fresh claim's flow came out %s to %q (reason %q), %d records; want one, attributed to %q: %v",
					status, owner, r.Str(flowschema.AttrPeerAttributionReason), len(records), fresh.ID, r.Attrs)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the fresh claim's flow did not come out of the collector within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// healthStats is what health_check answered while the test watched.
type healthStats struct {
	answers, failures int
	slowest           time.Duration
	lastErr           error
}

type healthProbe struct {
	cancel context.CancelFunc
	done   chan healthStats
}

// watchHealth asks the collector's health_check every healthEvery until
// stop, each answer within healthTimeout.
func watchHealth(col *collector) *healthProbe {
	ctx, cancel := context.WithCancel(context.Background())
	p := &healthProbe{cancel: cancel, done: make(chan healthStats, 1)}
	go func() {
		var st healthStats
		tick := time.NewTicker(healthEvery)
		defer tick.Stop()
		for {
			reqCtx, reqCancel := context.WithTimeout(ctx, healthTimeout)
			asked := time.Now()
			_, err := col.Get(reqCtx, loopback(col.healthPort), "/")
			took := time.Since(asked)
			reqCancel()
			switch {
			case ctx.Err() != nil: // stopped mid-request: not counted
			case err != nil:
				st.failures++
				st.lastErr = err
			default:
				st.answers++
				st.slowest = max(st.slowest, took)
			}
			select {
			case <-ctx.Done():
				p.done <- st
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

func (p *healthProbe) stop() healthStats {
	p.cancel()
	return <-p.done
}
