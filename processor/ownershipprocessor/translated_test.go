package ownershipprocessor

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/intervalstore"
	"github.com/flowattr/flowattr/internal/owners"
)

// serviceFlow is a flow record to the service address 10.96.0.10 that
// address translation sent to backend.
func serviceFlow(backend string, start time.Time) func(plog.LogRecord) {
	return with(flow("10.0.0.1", "10.96.0.10", start, t0), func(lr plog.LogRecord) {
		lr.Attributes().PutStr(flowschema.AttrPeerTranslatedAddress, backend)
		lr.Attributes().PutInt(flowschema.AttrPeerTranslatedPort, 8080)
	})
}

// backendAttribution returns status, reason and owner ID of a flow
// record's translated peer.
func backendAttribution(lr plog.LogRecord) []string {
	return []string{
		str(lr, flowschema.AttrPeerTranslatedAttributionStatus),
		str(lr, flowschema.AttrPeerTranslatedAttributionReason),
		str(lr, flowschema.PrefixPeerTranslatedOwner+"id"),
	}
}

// The peer (the Service) and the translated peer (the backend pod) are
// each attributed at the flow's start: a backend address that moved from
// one pod to another names the pod that held it then.
func TestTranslatedPeerAttributedAtFlowStart(t *testing.T) {
	h := newHarness(t, noHoldConfig())
	h.consume(
		claim("10.96.0.10", "svc-web", t0.Add(-time.Minute), t0, ""),
		claim("10.244.1.5", "pod-a", t0.Add(-time.Minute), t0.Add(-40*time.Second), ""),
		claim("10.244.1.5", "pod-b", t0.Add(-20*time.Second), t0, ""),
	)
	h.consume(
		serviceFlow("10.244.1.5", t0.Add(-50*time.Second)),
		serviceFlow("10.244.1.5", t0.Add(-10*time.Second)),
		serviceFlow("10.244.1.5", t0.Add(-30*time.Second)), // between the pods
		serviceFlow("::ffff:10.244.1.5", t0.Add(-10*time.Second)),
	)
	recs := h.records()
	require.Len(t, recs, 4)
	for _, rec := range recs {
		status, reason, owner := attribution(rec)
		assert.Equal(t, []string{"attributed", "<absent>", "svc-web"}, []string{status, reason, owner}, "the peer is the Service")
	}
	assert.Equal(t, []string{"attributed", "<absent>", "pod-a"}, backendAttribution(recs[0]))
	assert.Equal(t, "pod-a-svc", str(recs[0], flowschema.PrefixPeerTranslatedOwner+"service.name"))
	assert.Equal(t, []string{"attributed", "<absent>", "pod-b"}, backendAttribution(recs[1]))
	assert.Equal(t, []string{"unattributed", "gap", "<absent>"}, backendAttribution(recs[2]))
	assert.Equal(t, []string{"attributed", "<absent>", "pod-b"}, backendAttribution(recs[3]), "a mapped IPv4 backend is its IPv4 address")
	assert.Equal(t, "10.244.1.5", str(recs[0], flowschema.AttrPeerTranslatedAddress), "the translated address itself is left as it came")
}

func TestTranslatedPeerProblems(t *testing.T) {
	cfg := noHoldConfig()
	cfg.WorkloadCIDRs = []string{"10.0.0.0/8"}
	cfg.StaticOwners = []owners.Entry{{Prefixes: []string{"203.0.113.0/24"}, ID: "edge-lb"}}
	h := newHarness(t, cfg)
	h.consume(claim("10.96.0.10", "svc-web", t0.Add(-time.Minute), t0, ""))
	start := t0.Add(-10 * time.Second)
	forged := func(lr plog.LogRecord) {
		lr.Attributes().PutStr(flowschema.PrefixPeerTranslatedOwner+"id", "forged")
		lr.Attributes().PutStr(flowschema.PrefixPeerTranslatedOwner+"service.name", "forged")
		lr.Attributes().PutStr(flowschema.AttrPeerTranslatedAttributionStatus, "attributed")
	}
	h.consume(
		flow("10.0.0.1", "10.96.0.10", start, t0), // no translation: nothing written
		with(flow("10.0.0.1", "10.96.0.10", start, t0), forged),
		with(serviceFlow("10.244.1.5", start), forged), // no claim for the backend
		with(serviceFlow("10.244.1.5", start), func(lr plog.LogRecord) {
			lr.Attributes().PutStr(flowschema.AttrPeerTranslatedAddress, "backend")
		}),
		serviceFlow("203.0.113.9", start),
		serviceFlow("198.51.100.1", start),
		with(serviceFlow("10.244.1.5", start), func(lr plog.LogRecord) {
			lr.Attributes().Remove(flowschema.AttrFlowStartTime)
			lr.SetTimestamp(0)
		}),
		with(serviceFlow("10.244.1.5", start), func(lr plog.LogRecord) {
			lr.Attributes().Remove(flowschema.AttrNetworkPeerAddress)
		}),
	)
	recs := h.records()
	require.Len(t, recs, 8)
	absent := []string{"<absent>", "<absent>", "<absent>"}
	assert.Equal(t, absent, backendAttribution(recs[0]))
	assert.Equal(t, absent, backendAttribution(recs[1]), "a forged backend owner without a translated peer is removed")
	assert.Equal(t, "<absent>", str(recs[1], flowschema.PrefixPeerTranslatedOwner+"service.name"))
	assert.Equal(t, []string{"unattributed", "no_claim_yet", "<absent>"}, backendAttribution(recs[2]))
	assert.Equal(t, "<absent>", str(recs[2], flowschema.PrefixPeerTranslatedOwner+"service.name"), "the forged owner does not survive")
	assert.Equal(t, []string{"unattributed", "bad_key", "<absent>"}, backendAttribution(recs[3]))
	assert.Equal(t, []string{"attributed", "static", "edge-lb"}, backendAttribution(recs[4]))
	assert.Equal(t, []string{"external", "outside_workload_cidrs", "<absent>"}, backendAttribution(recs[5]))
	assert.Equal(t, []string{"unattributed", "missing_time", "<absent>"}, backendAttribution(recs[6]))
	status, reason, _ := attribution(recs[7])
	assert.Equal(t, []string{"unattributed", "missing_key"}, []string{status, reason})
	assert.Equal(t, []string{"unattributed", "no_claim_yet", "<absent>"}, backendAttribution(recs[7]), "the backend is looked up without the peer")
}

// A record held for its peer's claim has its translated peer looked up when
// it is released: a backend claim that arrived meanwhile attributes it.
func TestTranslatedPeerOfHeldRecord(t *testing.T) {
	h := newHarness(t, createDefaultConfig())
	h.consume(serviceFlow("10.244.1.5", t0.Add(-10*time.Second)))
	require.Empty(t, h.records(), "held for the Service's claim")
	h.consume(
		claim("10.244.1.5", "pod-a", t0.Add(-time.Minute), t0, ""),
		claim("10.96.0.10", "svc-web", t0.Add(-time.Minute), t0, ""),
	)
	recs := h.waitRecords(1)
	_, _, owner := attribution(recs[0])
	assert.Equal(t, "svc-web", owner)
	assert.Equal(t, []string{"attributed", "<absent>", "pod-a"}, backendAttribution(recs[0]))
}

func TestTranslatedPeerNotAttributedWhenDisabled(t *testing.T) {
	cfg := noHoldConfig()
	cfg.TranslatedOwnerPrefix = ""
	require.NoError(t, cfg.Validate())
	h := newHarness(t, cfg)
	h.consume(claim("10.244.1.5", "pod-a", t0.Add(-time.Minute), t0, ""))
	h.consume(with(serviceFlow("10.244.1.5", t0.Add(-10*time.Second)), func(lr plog.LogRecord) {
		lr.Attributes().PutStr(flowschema.AttrPeerTranslatedAttributionStatus, "upstream")
	}))
	rec := h.records()[0]
	assert.Equal(t, []string{"upstream", "<absent>", "<absent>"}, backendAttribution(rec), "left as it came")
}

func TestCustomTranslatedPrefix(t *testing.T) {
	cfg := noHoldConfig()
	cfg.TranslatedOwnerPrefix = "backend.owner."
	cfg.TranslatedKeyAttribute = "backend.address"
	require.NoError(t, cfg.Validate())
	h := newHarness(t, cfg)
	h.consume(claim("10.244.1.5", "pod-a", t0.Add(-time.Minute), t0, ""))
	h.consume(with(flow("10.0.0.1", "10.96.0.10", t0.Add(-10*time.Second), t0), func(lr plog.LogRecord) {
		lr.Attributes().PutStr("backend.address", "10.244.1.5")
	}))
	rec := h.records()[0]
	assert.Equal(t, "pod-a", str(rec, "backend.owner.id"))
	assert.Equal(t, "attributed", str(rec, flowschema.AttrPeerTranslatedAttributionStatus))
	assert.Equal(t, "<absent>", str(rec, flowschema.PrefixPeerTranslatedOwner+"id"))
}

// A record is held while a claim can still decide its peer or its backend,
// and released once, when neither waits.
func TestRecordHeldForItsBackend(t *testing.T) {
	h := newHarness(t, createDefaultConfig())
	h.consume(claim("10.96.0.10", "svc-web", t0.Add(-time.Minute), t0, ""))
	h.consume(
		serviceFlow("10.244.1.5", t0.Add(-10*time.Second)), // the Service is known, its backend not yet
		serviceFlow("10.244.1.6", t0.Add(-10*time.Second)),
	)
	require.Empty(t, h.records(), "held for the backends' claims")

	h.consume(claim("10.244.1.5", "pod-a", t0.Add(-time.Minute), t0, ""))
	recs := h.waitRecords(1)
	_, _, owner := attribution(recs[0])
	assert.Equal(t, "svc-web", owner)
	assert.Equal(t, []string{"attributed", "<absent>", "pod-a"}, backendAttribution(recs[0]))
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "attributed"}, 1)

	// The other one's backend never gets a claim: it goes on at max_wait,
	// its Service attributed, its backend not.
	h.clock.Advance(createDefaultConfig().MaxWait)
	recs = h.waitRecords(2)
	_, _, owner = attribution(recs[1])
	assert.Equal(t, "svc-web", owner)
	assert.Equal(t, []string{"unattributed", "no_claim_yet", "<absent>"}, backendAttribution(recs[1]))
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "timeout"}, 1)
}

// Waiting for both: the Service's claim alone does not release it, the
// backend's then does, once.
func TestRecordHeldForPeerAndBackend(t *testing.T) {
	h := newHarness(t, createDefaultConfig())
	h.consume(serviceFlow("10.244.1.5", t0.Add(-10*time.Second)))
	h.consume(claim("10.96.0.10", "svc-web", t0.Add(-time.Minute), t0, ""))
	require.Empty(t, h.records(), "the backend still waits")
	h.consume(claim("10.244.1.5", "pod-a", t0.Add(-time.Minute), t0, ""))
	h.consume(claim("10.244.1.5", "pod-a", t0, t0.Add(time.Second), ""), claim("10.96.0.10", "svc-web", t0, t0.Add(time.Second), ""))
	recs := h.records()
	require.Len(t, recs, 1, "released once")
	assert.Equal(t, []string{"attributed", "<absent>", "pod-a"}, backendAttribution(recs[0]))
	h.clock.Advance(createDefaultConfig().MaxWait)
	h.consumeEmpty()
	assert.Len(t, h.records(), 1, "nothing left in the hold")
	assertCounter(t, h.tel, "otelcol_processor_ownership_records_released", map[string]string{"outcome": "attributed"}, 1)
}

// The hold indexes a record under its peer and its backend: every way out
// (a claim for either key, max_wait, overflow, a refused batch) leaves
// neither list behind.
func TestHoldIndexesBackend(t *testing.T) {
	peer, backend := mustAddr("10.96.0.10"), mustAddr("10.244.1.5")
	covered := map[netip.Addr]bool{}
	lookup := func(a netip.Addr, _ time.Time) intervalstore.Result {
		if covered[a] {
			return intervalstore.Result{Status: intervalstore.Attributed}
		}
		return intervalstore.Result{Status: intervalstore.Unattributed, Reason: intervalstore.ReasonNoClaim}
	}
	newRecord := func() *heldRecord { return &heldRecord{key: peer, backend: backend, at: t0, since: t0} }
	add := func(h *hold, b *batchRecords, r *heldRecord) {
		t.Helper()
		held, _, _ := h.add(b, r, plog.NewLogRecord(), lookup)
		require.True(t, held)
	}
	empty := func(h *hold) {
		t.Helper()
		assert.Empty(t, h.byKey)
		assert.Zero(t, h.count)
	}

	for _, key := range []netip.Addr{peer, backend} {
		clear(covered)
		h := newHold(time.Minute, 10)
		var b batchRecords
		add(h, &b, newRecord())
		h.settle(&b, false)
		covered[peer], covered[backend] = true, true
		out := h.recheck([]netip.Addr{key}, lookup)
		require.Len(t, out, 1, "released by a claim for %v", key)
		empty(h)
		assert.Empty(t, h.recheck([]netip.Addr{peer, backend}, lookup), "once")
	}
	clear(covered)

	h := newHold(time.Minute, 10)
	var b batchRecords
	add(h, &b, newRecord())
	h.settle(&b, false)
	covered[peer] = true
	assert.Empty(t, h.recheck([]netip.Addr{peer}, lookup), "the backend still waits")
	require.Len(t, h.expire(t0.Add(time.Minute), lookup), 1)
	empty(h)

	h = newHold(time.Minute, 1)
	var b1, b2 batchRecords
	add(h, &b1, newRecord())
	h.settle(&b1, false)
	_, _, overflow := h.add(&b2, newRecord(), plog.NewLogRecord(), lookup)
	require.Len(t, overflow, 1)
	_, dropped := h.settle(&b2, true)
	assert.Equal(t, 1, dropped)
	empty(h)
}
