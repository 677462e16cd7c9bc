package ebpfflowreceiver

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"
	"go.uber.org/zap"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/metadatatest"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/tracer"
)

func TestNATConfig(t *testing.T) {
	cfg := createDefaultConfig()
	require.NoError(t, confmap.NewFromStringMap(map[string]any{
		"nat": map[string]any{"service_cidrs": []any{"10.96.0.0/12", "fd00:96::/108", "192.0.2.7"}},
	}).Unmarshal(cfg))
	require.NoError(t, cfg.Validate())
	prefixes, err := cfg.NAT.prefixes()
	require.NoError(t, err)
	assert.Equal(t, []netip.Prefix{
		netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("fd00:96::/108"), netip.MustParsePrefix("192.0.2.7/32"),
	}, prefixes)
	assert.Empty(t, createDefaultConfig().NAT.ServiceCIDRs, "off by default")

	cfg.NAT.ServiceCIDRs = []string{"10.96.0.1/12", "service"}
	err = cfg.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), `nat.service_cidrs: "10.96.0.1/12"`)
	assert.Contains(t, err.Error(), `nat.service_cidrs: "service" is neither an IP address nor a CIDR prefix`)

	cfg.NAT.ServiceCIDRs = make([]string, tracer.MaxNATPrefixes+1)
	for i := range cfg.NAT.ServiceCIDRs {
		cfg.NAT.ServiceCIDRs[i] = netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}).String() + "/24"
	}
	assert.ErrorContains(t, cfg.Validate(), "nat.service_cidrs: 1025 prefixes, at most 1024")
}

// fakeConntrack answers Translation from a table keyed by the local end.
// An entry with once set is gone after its first query, as a connection
// tracking entry that expires after its connection closed.
type fakeConntrack struct {
	mu      sync.Mutex
	entries map[netip.AddrPort]fakeEntry
	queries []netip.AddrPort // local ends, in order
	closed  bool
}

type fakeEntry struct {
	to   netip.AddrPort
	err  error
	once bool
}

func (f *fakeConntrack) Translation(local, _ netip.AddrPort) (netip.AddrPort, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, local)
	e, ok := f.entries[local]
	if !ok {
		return netip.AddrPort{}, errNoConntrackEntry
	}
	if e.once {
		delete(f.entries, local)
	}
	return e.to, e.err
}

func (f *fakeConntrack) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

var (
	service = netip.MustParseAddrPort("10.96.0.10:80")
	backend = netip.MustParseAddrPort("10.244.1.5:8080")
)

// serviceFlow is a client connection from 10.0.0.1:port to the service.
func serviceFlow(kind tracer.Kind, port uint16, cookie uint64) tracer.Event {
	return tracer.Event{
		Kind: kind, Role: tracer.RoleClient,
		LocalAddr: netip.MustParseAddr("10.0.0.1"), LocalPort: port,
		PeerAddr: service.Addr(), PeerPort: service.Port(),
		Start: at(1), StartKnown: true, End: at(2), Cookie: cookie,
	}
}

func local(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port)
}

// runNAT runs a receiver with nat.service_cidrs 10.96.0.0/12 over events,
// looking translations up in ct (or failing to open it with openErr), and
// returns its flow records.
func runNAT(t *testing.T, ct *fakeConntrack, openErr error, maxConnections int, events ...tracer.Event) ([]plog.LogRecord, *componenttest.Telemetry) {
	t.Helper()
	cfg := createDefaultConfig()
	cfg.ClaimInterval = time.Hour
	cfg.FlushInterval = time.Hour
	cfg.ActiveInterval = 0
	cfg.MaxConnections = maxConnections
	cfg.NAT.ServiceCIDRs = []string{"10.96.0.0/12"}
	cfg.Filter.ExcludeCIDRs = []string{"10.0.9.0/24"}
	require.NoError(t, cfg.Validate())
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	sink := new(consumertest.LogsSink)
	ft := newFakeTracer(events...)
	env := testEnvironment(ft, newManualClock(at(0)), machineIDFile(t))
	var opts tracer.Options
	env.newTracer = func(o tracer.Options) (flowTracer, error) { opts = o; return ft, nil }
	env.openNAT = func() (natTable, error) {
		if openErr != nil {
			return nil, openErr
		}
		return ct, nil
	}
	r, err := newFlowReceiver(metadatatest.NewSettings(tel), cfg, sink, env)
	require.NoError(t, err)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	<-ft.delivered
	require.NoError(t, r.Shutdown(context.Background()))
	assert.Equal(t, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}, opts.NATPrefixes, "the tracer reports connects to the service CIDRs")
	if ct != nil && openErr == nil {
		assert.True(t, ct.closed, "connection tracking closed at shutdown")
	}
	flows, _ := split(records(sink))
	return flows, tel
}

// translatedPeer returns the translated peer a record carries, "" for none.
func translatedPeer(lr plog.LogRecord) string {
	a, okA := lr.Attributes().Get(flowschema.AttrPeerTranslatedAddress)
	p, okP := lr.Attributes().Get(flowschema.AttrPeerTranslatedPort)
	if !okA && !okP {
		return ""
	}
	return netip.AddrPortFrom(netip.MustParseAddr(a.Str()), uint16(p.Int())).String()
}

func natLookups(kv ...any) []metricdata.DataPoint[int64] {
	var out []metricdata.DataPoint[int64]
	counts := map[[2]string]int64{}
	for i := 0; i+2 < len(kv)+1; i += 3 {
		counts[[2]string{kv[i].(string), kv[i+1].(string)}] = int64(kv[i+2].(int))
	}
	for _, at := range []string{natAtConnect, natAtRecord} {
		for _, result := range []string{natTranslated, natUntranslated, natNotFound, natError, natUnavailable} {
			out = append(out, metricdata.DataPoint[int64]{
				Attributes: attribute.NewSet(attribute.String("at", at), attribute.String("result", result)),
				Value:      counts[[2]string{at, result}],
			})
		}
	}
	return out
}

func TestReceiverTranslatesServiceFlows(t *testing.T) {
	ct := &fakeConntrack{entries: map[netip.AddrPort]fakeEntry{
		// Gone by the close: the close's record has the connect's answer.
		local(1001): {to: backend, once: true},
		// Only looked up at close: a connection older than the receiver.
		local(1002): {to: backend},
		// Open: looked up at its interim report, the answer kept for its
		// close.
		local(1003): {to: backend, once: true},
		// Found, not translated (a service address without DNAT).
		local(1004): {to: service},
		// The query fails at connect; the close asks again.
		local(1005): {err: errors.New("netlink: no buffer space"), once: true},
	}}
	other := serviceFlow(tracer.KindClosed, 1006, 6)
	other.PeerAddr = netip.MustParseAddr("198.51.100.1")
	server := serviceFlow(tracer.KindClosed, 1007, 7)
	server.Role = tracer.RoleServer
	filtered := serviceFlow(tracer.KindConnected, 1008, 8)
	filtered.LocalAddr = netip.MustParseAddr("10.0.9.1")
	flows, tel := runNAT(t, ct, nil, 0,
		serviceFlow(tracer.KindConnected, 1001, 1),
		serviceFlow(tracer.KindConnected, 1004, 4),
		serviceFlow(tracer.KindConnected, 1005, 5),
		filtered, // the filter drops it: not looked up, not counted as a filtered flow
		serviceFlow(tracer.KindClosed, 1001, 1),
		serviceFlow(tracer.KindClosed, 1002, 2),
		serviceFlow(tracer.KindActive, 1003, 3),
		serviceFlow(tracer.KindClosed, 1003, 3),
		serviceFlow(tracer.KindClosed, 1004, 4),
		serviceFlow(tracer.KindFailed, 1005, 5),
		other,  // not a service address: no lookup
		server, // the server side of a connection: no lookup
	)
	var got []string
	for _, lr := range flows {
		port, _ := lr.Attributes().Get(flowschema.AttrNetworkLocalPort)
		state, _ := lr.Attributes().Get(flowschema.AttrFlowState)
		got = append(got, strings.Join([]string{port.AsString(), state.Str(), translatedPeer(lr)}, " "))
	}
	assert.Equal(t, []string{
		"1001 closed 10.244.1.5:8080",
		"1002 closed 10.244.1.5:8080",
		"1003 active 10.244.1.5:8080",
		"1003 closed 10.244.1.5:8080",
		"1004 closed ",
		"1005 failed ",
		"1006 closed ",
		"1007 closed ",
	}, got, "a connection's connected event yields no record")
	assert.Equal(t, []netip.AddrPort{local(1001), local(1004), local(1005), local(1002), local(1003), local(1005)}, ct.queries,
		"one query per connection, but for the one whose query failed")

	opt := metricdatatest.IgnoreTimestamp()
	metadatatest.AssertEqualEbpfflowNatLookups(t, tel, natLookups(
		natAtConnect, natTranslated, 1,
		natAtConnect, natUntranslated, 1,
		natAtConnect, natError, 1,
		natAtRecord, natTranslated, 2,
		natAtRecord, natNotFound, 1,
	), opt)
	metadatatest.AssertEqualEbpfflowNatPendingEvicted(t, tel, []metricdata.DataPoint[int64]{{Value: 0}}, opt)
	metadatatest.AssertEqualEbpfflowFlowsFiltered(t, tel, []metricdata.DataPoint[int64]{{Value: 0}}, opt)
}

// Without connection tracking the receiver still runs: flows to services
// go out untranslated, every one counted.
func TestReceiverWithoutConntrack(t *testing.T) {
	flows, tel := runNAT(t, nil, errors.New("netlink: permission denied"), 0,
		serviceFlow(tracer.KindConnected, 1001, 1),
		serviceFlow(tracer.KindClosed, 1001, 1),
		serviceFlow(tracer.KindClosed, 1002, 2),
	)
	require.Len(t, flows, 2)
	for _, lr := range flows {
		assert.Empty(t, translatedPeer(lr))
		peer, _ := lr.Attributes().Get(flowschema.AttrNetworkPeerAddress)
		assert.Equal(t, service.Addr().String(), peer.Str())
	}
	metadatatest.AssertEqualEbpfflowNatLookups(t, tel, natLookups(
		natAtConnect, natUnavailable, 1,
		natAtRecord, natUnavailable, 2,
	), metricdatatest.IgnoreTimestamp())
}

// Connect-time answers wait for their close, at most max_connections of
// them; beyond that the oldest is let go and counted, and its close is
// looked up again.
func TestReceiverBoundsPendingTranslations(t *testing.T) {
	ct := &fakeConntrack{entries: map[netip.AddrPort]fakeEntry{
		local(1001): {to: backend}, local(1002): {to: backend}, local(1003): {to: backend},
	}}
	flows, tel := runNAT(t, ct, nil, 2,
		serviceFlow(tracer.KindConnected, 1001, 1),
		serviceFlow(tracer.KindConnected, 1002, 2),
		serviceFlow(tracer.KindConnected, 1003, 3), // evicts 1001's answer
		serviceFlow(tracer.KindClosed, 1001, 1),
		serviceFlow(tracer.KindClosed, 1002, 2),
		serviceFlow(tracer.KindClosed, 1003, 3),
	)
	require.Len(t, flows, 3)
	for _, lr := range flows {
		assert.Equal(t, backend.String(), translatedPeer(lr))
	}
	assert.Equal(t, []netip.AddrPort{local(1001), local(1002), local(1003), local(1001)}, ct.queries)
	opt := metricdatatest.IgnoreTimestamp()
	metadatatest.AssertEqualEbpfflowNatPendingEvicted(t, tel, []metricdata.DataPoint[int64]{{Value: 1}}, opt)
	metadatatest.AssertEqualEbpfflowNatLookups(t, tel, natLookups(
		natAtConnect, natTranslated, 3,
		natAtRecord, natTranslated, 1,
	), opt)
}

// An interim report taken after its connection's close (the ring's events
// go first) asks connection tracking nothing: its 4-tuple may be another
// connection's by then. Nor does it keep an answer for a socket that is
// gone, which would push out a live connection's.
func TestStaleInterimAfterCloseIsNotLookedUp(t *testing.T) {
	other := netip.MustParseAddrPort("10.244.2.9:8080")
	ct := &fakeConntrack{entries: map[netip.AddrPort]fakeEntry{local(1001): {to: backend}}}
	evictions := 0
	n := newNATResolver([]netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}, ct, 2, zap.NewNop(),
		func(string, string) {}, func() { evictions++ })
	ev := func(kind tracer.Kind, port uint16, cookie uint64) *tracer.Event {
		e := serviceFlow(kind, port, cookie)
		return &e
	}

	n.connected(ev(tracer.KindConnected, 1001, 1))
	assert.Equal(t, backend, n.translated(ev(tracer.KindClosed, 1001, 1)))
	// The port is taken again at once, by a connection to another backend.
	ct.entries[local(1001)] = fakeEntry{to: other}
	n.connected(ev(tracer.KindConnected, 1001, 2))
	queries := len(ct.queries)
	assert.False(t, n.translated(ev(tracer.KindActive, 1001, 1)).IsValid(), "connection 1's stale interim report")
	assert.Len(t, ct.queries, queries, "no lookup for it")
	assert.NotContains(t, n.pending, uint64(1), "no answer kept for it")
	assert.Equal(t, other, n.translated(ev(tracer.KindActive, 1001, 2)), "connection 2's own report")
	n.connected(ev(tracer.KindConnected, 2001, 3))
	assert.Zero(t, evictions, "two open connections fit")
}

// The closed connections remembered are the last ones, up to the bound.
func TestRecentSetKeepsTheLast(t *testing.T) {
	var s recentSet
	for c := uint64(1); c <= 5; c++ {
		s.add(c, 3)
	}
	s.add(5, 3) // again: no change
	s.add(0, 3) // no cookie: not added
	for c, want := range map[uint64]bool{0: false, 1: false, 2: false, 3: true, 4: true, 5: true} {
		assert.Equal(t, want, s.has(c), "cookie %d", c)
	}
	assert.Len(t, s.ring, 3)
	assert.Len(t, s.set, 3)
}
