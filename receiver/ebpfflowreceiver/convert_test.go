package ebpfflowreceiver

import (
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/tracer"
)

func TestPutFlowClient(t *testing.T) {
	ev := tracer.Event{
		Kind: tracer.KindClosed, Role: tracer.RoleClient,
		LocalAddr: netip.MustParseAddr("10.0.0.1"), PeerAddr: netip.MustParseAddr("10.0.0.2"),
		LocalPort: 40000, PeerPort: 443,
		Start: at(1), StartKnown: true, End: at(3),
		BytesSent: 123456, BytesReceived: 789,
		SegmentsSent: 90, SegmentsReceived: 45, Retransmits: 2,
		SRTT: 1500 * time.Microsecond,
		PID:  4242, Comm: "curl", CgroupID: 7, NetnsInode: 4026531840,
		Cookie: 99,
	}
	owner := &owners.Owner{ID: "web-1", Attributes: []owners.Attribute{{Name: "service.name", Value: "web"}}}
	lr := plog.NewLogRecord()
	newFlowWriter().putFlow(lr, &ev, owner, nil, netip.MustParseAddrPort("10.244.1.5:8443"), at(4))

	assert.Equal(t, flowschema.EventFlow, lr.EventName())
	assert.Equal(t, pcommon.NewTimestampFromTime(at(3)), lr.Timestamp())
	assert.Equal(t, pcommon.NewTimestampFromTime(at(4)), lr.ObservedTimestamp())
	assert.Equal(t, map[string]any{
		"network.transport":                  "tcp",
		"network.type":                       "ipv4",
		"network.local.address":              "10.0.0.1",
		"network.local.port":                 int64(40000),
		"network.peer.address":               "10.0.0.2",
		"network.peer.port":                  int64(443),
		"client.address":                     "10.0.0.1",
		"client.port":                        int64(40000),
		"server.address":                     "10.0.0.2",
		"server.port":                        int64(443),
		"flowattr.flow.role":                 "client",
		"flowattr.flow.state":                "closed",
		"flowattr.flow.start_time_unix_nano": at(1).UnixNano(),
		"flowattr.flow.bytes_sent":           int64(123456),
		"flowattr.flow.bytes_received":       int64(789),
		"flowattr.flow.segments_sent":        int64(90),
		"flowattr.flow.segments_received":    int64(45),
		"flowattr.flow.retransmits":          int64(2),
		"flowattr.flow.srtt_us":              int64(1500),
		"process.pid":                        int64(4242),
		"process.executable.name":            "curl",
		"flowattr.process.cgroup_id":         int64(7),
		"flowattr.netns.inode":               int64(4026531840),
		"flowattr.flow.socket_cookie":        int64(99),
		"flowattr.peer.translated.address":   "10.244.1.5",
		"flowattr.peer.translated.port":      int64(8443),
		"flowattr.local.owner.id":            "web-1",
		"flowattr.local.owner.service.name":  "web",
	}, lr.Attributes().AsRaw())
}

func TestPutFlowServerFailedUnowned(t *testing.T) {
	ev := tracer.Event{
		Kind: tracer.KindFailed, Role: tracer.RoleServer,
		LocalAddr: netip.MustParseAddr("2001:db8::1"), PeerAddr: netip.MustParseAddr("2001:db8::2"),
		LocalPort: 8080, PeerPort: 51000,
		Start: at(5), StartKnown: false, End: at(6),
		Err: syscall.ECONNREFUSED,
	}
	lr := plog.NewLogRecord()
	newFlowWriter().putFlow(lr, &ev, nil, nil, netip.AddrPort{}, at(7))
	assert.Equal(t, map[string]any{
		"network.transport":                    "tcp",
		"network.type":                         "ipv6",
		"network.local.address":                "2001:db8::1",
		"network.local.port":                   int64(8080),
		"network.peer.address":                 "2001:db8::2",
		"network.peer.port":                    int64(51000),
		"client.address":                       "2001:db8::2",
		"client.port":                          int64(51000),
		"server.address":                       "2001:db8::1",
		"server.port":                          int64(8080),
		"flowattr.flow.role":                   "server",
		"flowattr.flow.state":                  "failed",
		"flowattr.flow.start_time_unix_nano":   at(5).UnixNano(),
		"flowattr.flow.start_predates_capture": true,
		"flowattr.flow.bytes_sent":             int64(0),
		"flowattr.flow.bytes_received":         int64(0),
		"flowattr.flow.segments_sent":          int64(0),
		"flowattr.flow.segments_received":      int64(0),
		"flowattr.flow.retransmits":            int64(0),
		"flowattr.flow.srtt_us":                int64(0),
		"flowattr.flow.error":                  "ECONNREFUSED",
	}, lr.Attributes().AsRaw())
}

func TestPutFlowActiveUnknownRole(t *testing.T) {
	ev := tracer.Event{
		Kind: tracer.KindActive, Role: tracer.RoleUnknown,
		LocalAddr: netip.MustParseAddr("10.0.0.1"), PeerAddr: netip.MustParseAddr("10.0.0.2"),
		LocalPort: 1, PeerPort: 2, Start: at(1), StartKnown: true, End: at(2),
	}
	lr := plog.NewLogRecord()
	newFlowWriter().putFlow(lr, &ev, nil, nil, netip.AddrPort{}, at(2))
	attrs := lr.Attributes().AsRaw()
	assert.Equal(t, "active", attrs["flowattr.flow.state"])
	for _, k := range []string{"flowattr.flow.role", "client.address", "client.port", "server.address", "server.port"} {
		assert.NotContains(t, attrs, k, "no role, no client/server")
	}
	assert.Equal(t, pcommon.NewTimestampFromTime(at(2)), lr.Timestamp(), "active records are stamped with the observation time")
}

// TestFlowWriterLocalAddrCache: the cache of local address text is bounded
// and never answers with another address's text.
func TestFlowWriterLocalAddrCache(t *testing.T) {
	w := newFlowWriter()
	for i := range 3 * maxCachedLocalAddrs {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		if i%2 == 1 {
			a = netip.MustParseAddr("fd00::1") // a repeated address between new ones
		}
		if got := w.localAddr(a); got != a.String() {
			t.Fatalf("localAddr(%v) = %q", a, got)
		}
		if len(w.localAddrs) > maxCachedLocalAddrs {
			t.Fatalf("cache holds %d addresses, bound %d", len(w.localAddrs), maxCachedLocalAddrs)
		}
	}
}

// TestPutFlowCapacity: an event with every optional field writes exactly
// maxFlowAttrs attributes, for either role, so the capacity putFlow reserves
// is neither short nor wasted; all of them are in flowschema.FlowAttributes,
// which the ownership processor keeps owner_prefix clear of.
func TestPutFlowCapacity(t *testing.T) {
	for _, role := range []tracer.Role{tracer.RoleClient, tracer.RoleServer} {
		ev := tracer.Event{
			Kind: tracer.KindFailed, Role: role,
			LocalAddr: netip.MustParseAddr("10.0.0.1"), PeerAddr: netip.MustParseAddr("10.0.0.2"),
			Start: at(1), End: at(2), Err: syscall.ECONNREFUSED,
			PID: 1, Comm: "c", CgroupID: 1, NetnsInode: 1, Cookie: 1,
		}
		lr := plog.NewLogRecord()
		newFlowWriter().putFlow(lr, &ev, nil, nil, netip.MustParseAddrPort("[fd00::5]:80"), at(3))
		assert.Equal(t, maxFlowAttrs, lr.Attributes().Len(), "role %v", role)
		for k := range lr.Attributes().All() {
			assert.Contains(t, flowschema.FlowAttributes(), k, "flowschema.FlowAttributes lacks an attribute putFlow writes")
		}
	}
}

func TestPutFlowHostNetworkWorkload(t *testing.T) {
	ev := tracer.Event{
		Kind: tracer.KindClosed, Role: tracer.RoleClient,
		LocalAddr: netip.MustParseAddr("192.0.2.10"), PeerAddr: netip.MustParseAddr("10.0.0.2"),
		LocalPort: 40000, PeerPort: 443, Start: at(1), StartKnown: true, End: at(3), CgroupID: 7,
	}
	node := &owners.Owner{ID: "node-a"}
	pod := &owners.Owner{ID: "uid-h", Attributes: []owners.Attribute{{Name: "k8s.pod.name", Value: "agent-x"}}}
	lr := plog.NewLogRecord()
	newFlowWriter().putFlow(lr, &ev, node, pod, netip.AddrPort{}, at(4))
	attrs := lr.Attributes().AsRaw()
	assert.Equal(t, "node-a", attrs["flowattr.local.owner.id"], "the node owns its address")
	assert.Equal(t, "uid-h", attrs["flowattr.local.workload.id"])
	assert.Equal(t, "agent-x", attrs["flowattr.local.workload.k8s.pod.name"])
	assert.NotContains(t, attrs, "flowattr.local.owner.k8s.pod.name")
}

// TestPutFlowShapes: one writer, whose templates are made by earlier
// records, writes records of every shape (role and optional attributes),
// in an order that reuses each template after others, exactly as a fresh
// writer does.
func TestPutFlowShapes(t *testing.T) {
	shared := newFlowWriter()
	owner := &owners.Owner{ID: "web-1", Attributes: []owners.Attribute{{Name: "service.name", Value: "web"}}}
	const shapes = 3 << 8 // three roles, eight optional parts
	for i := range 2 * shapes {
		s := (i * 7) % shapes // each shape twice, shapes interleaved
		role, opt := tracer.Role(s%3), s/3
		ev := tracer.Event{
			Kind: tracer.KindClosed, Role: role,
			LocalAddr: netip.MustParseAddr("10.0.0.1"), PeerAddr: netip.MustParseAddr("10.0.0.2"),
			LocalPort: uint16(1000 + i), PeerPort: 443,
			Start: at(1), StartKnown: opt&1 == 0, End: at(2), BytesSent: uint64(i),
		}
		if opt&2 != 0 {
			ev.Err = syscall.ECONNRESET
		}
		if opt&4 != 0 {
			ev.PID = uint32(i + 1)
		}
		if opt&8 != 0 {
			ev.Comm = "c"
		}
		if opt&16 != 0 {
			ev.CgroupID = uint64(i + 1)
		}
		if opt&32 != 0 {
			ev.NetnsInode = uint32(i + 1)
		}
		if opt&64 != 0 {
			ev.Cookie = uint64(i + 1)
		}
		var translated netip.AddrPort
		if opt&128 != 0 {
			translated = netip.MustParseAddrPort("10.244.0.9:8080")
		}
		o := owner
		if i%2 == 1 {
			o = nil
		}
		got, want := plog.NewLogRecord(), plog.NewLogRecord()
		shared.putFlow(got, &ev, o, nil, translated, at(3))
		newFlowWriter().putFlow(want, &ev, o, nil, translated, at(3))
		if !assert.Equal(t, want.Attributes().AsRaw(), got.Attributes().AsRaw(), "record %d, shape %d", i, s) {
			return
		}
	}
}
