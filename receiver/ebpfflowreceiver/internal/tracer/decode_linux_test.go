package tracer

import (
	"encoding/binary"
	"net/netip"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The hand-written decoder must agree with the C layout, which bpf2go
// mirrors in flowFlowEvent.
func TestEventLayout(t *testing.T) {
	var e flowFlowEvent
	for _, f := range []struct {
		name      string
		got, want uintptr
	}{
		{"size", unsafe.Sizeof(e), eventSize},
		{"tuple.saddr", unsafe.Offsetof(e.Tuple) + unsafe.Offsetof(e.Tuple.Saddr), 0},
		{"tuple.daddr", unsafe.Offsetof(e.Tuple) + unsafe.Offsetof(e.Tuple.Daddr), 16},
		{"tuple.sport", unsafe.Offsetof(e.Tuple) + unsafe.Offsetof(e.Tuple.Sport), 32},
		{"tuple.dport", unsafe.Offsetof(e.Tuple) + unsafe.Offsetof(e.Tuple.Dport), 34},
		{"cookie", unsafe.Offsetof(e.Cookie), 40},
		{"start_ns", unsafe.Offsetof(e.StartNs), 48},
		{"end_ns", unsafe.Offsetof(e.EndNs), 56},
		{"bytes_sent", unsafe.Offsetof(e.BytesSent), 64},
		{"bytes_received", unsafe.Offsetof(e.BytesReceived), 72},
		{"cgroup_id", unsafe.Offsetof(e.CgroupId), 80},
		{"segs_out", unsafe.Offsetof(e.SegsOut), 88},
		{"segs_in", unsafe.Offsetof(e.SegsIn), 92},
		{"total_retrans", unsafe.Offsetof(e.TotalRetrans), 96},
		{"srtt_us", unsafe.Offsetof(e.SrttUs), 100},
		{"pid", unsafe.Offsetof(e.Pid), 104},
		{"netns", unsafe.Offsetof(e.Netns), 108},
		{"err", unsafe.Offsetof(e.Err), 112},
		{"kind", unsafe.Offsetof(e.Kind), 116},
		{"role", unsafe.Offsetof(e.Role), 117},
		{"flags", unsafe.Offsetof(e.Flags), 118},
		{"comm", unsafe.Offsetof(e.Comm), 120},
	} {
		if f.got != f.want {
			t.Errorf("%s at %d, decoder assumes %d", f.name, f.got, f.want)
		}
	}
}

func sampleRecord() []byte {
	b := make([]byte, eventSize)
	le := binary.LittleEndian
	mapped := netip.AddrFrom16(netip.MustParseAddr("10.1.2.3").As16()).As16()
	copy(b[0:], mapped[:])
	v6 := netip.MustParseAddr("fd00::7").As16()
	copy(b[16:], v6[:])
	le.PutUint16(b[32:], 443)
	le.PutUint16(b[34:], 51000)
	le.PutUint64(b[40:], 77)
	le.PutUint64(b[48:], 1_000_000_000)
	le.PutUint64(b[56:], 3_500_000_000)
	le.PutUint64(b[64:], 123457)
	le.PutUint64(b[72:], 65539)
	le.PutUint64(b[80:], 9)
	le.PutUint32(b[88:], 10)
	le.PutUint32(b[92:], 11)
	le.PutUint32(b[96:], 2)
	le.PutUint32(b[100:], 250)
	le.PutUint32(b[104:], 4242)
	le.PutUint32(b[108:], 4026531833)
	le.PutUint32(b[112:], uint32(syscall.ECONNRESET))
	b[116], b[117], b[118] = byte(KindClosed), byte(RoleServer), eventStartUnknown
	copy(b[120:], "nginx")
	return b
}

func TestDecodeEvent(t *testing.T) {
	clock := &bootClock{}
	clock.offsetNanos.Store(1_700_000_000_000_000_000)
	var ev Event
	if err := decodeEvent(sampleRecord(), clock, &ev); err != nil {
		t.Fatal(err)
	}
	want := Event{
		Kind: KindClosed, Role: RoleServer,
		LocalAddr: netip.MustParseAddr("10.1.2.3"), PeerAddr: netip.MustParseAddr("fd00::7"),
		LocalPort: 443, PeerPort: 51000,
		Start: time.Unix(1_700_000_001, 0), StartKnown: false, StartBoot: time.Second, End: time.Unix(1_700_000_003, 500_000_000),
		BytesSent: 123457, BytesReceived: 65539, SegmentsSent: 10, SegmentsReceived: 11, Retransmits: 2,
		SRTT: 250 * time.Microsecond, Err: syscall.ECONNRESET, PID: 4242, Comm: "nginx", CgroupID: 9,
		NetnsInode: 4026531833, Cookie: 77,
	}
	if ev != want {
		t.Errorf("decoded\n%+v\nwant\n%+v", ev, want)
	}

	for name, mutate := range map[string]func([]byte) []byte{
		"short":        func(b []byte) []byte { return b[:eventSize-1] },
		"unknown kind": func(b []byte) []byte { b[116] = 9; return b },
		"unknown role": func(b []byte) []byte { b[117] = 9; return b },
	} {
		if err := decodeEvent(mutate(sampleRecord()), clock, &ev); err == nil {
			t.Errorf("%s record decoded without error", name)
		}
	}
}

func TestBootClock(t *testing.T) {
	c, err := newBootClock()
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	got := c.wall(uint64(ts.Nano()))
	if got.Before(before.Add(-50*time.Microsecond)) || got.After(after.Add(50*time.Microsecond)) {
		t.Errorf("boot time converted to %v, outside [%v, %v]", got, before, after)
	}
}

func TestParseBootOffset(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"monotonic           0         0\nboottime            0         0\n", 0, false},
		{"monotonic           0         0\nboottime         3000         0\n", 3000 * int64(time.Second), false},
		{"monotonic 0 0\nboottime -3000 500\n", -3000*int64(time.Second) + 500, false},
		{"7 2 1\n", 2*int64(time.Second) + 1, false}, // the clock as its ID
		{"monotonic 0 0\n", 0, true},
		{"boottime x 0\n", 0, true},
	} {
		got, err := parseBootOffset([]byte(tc.in))
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseBootOffset(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// TestDecodeEventCommReuse: a record of the command ev already holds keeps
// that string; another command, or none, replaces it.
func TestDecodeEventCommReuse(t *testing.T) {
	clock := &bootClock{}
	var ev Event
	rec := sampleRecord()
	if err := decodeEvent(rec, clock, &ev); err != nil {
		t.Fatal(err)
	}
	first := ev.Comm
	if err := decodeEvent(rec, clock, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Comm != "nginx" || unsafe.StringData(ev.Comm) != unsafe.StringData(first) {
		t.Errorf("the same command decoded to a new string %q", ev.Comm)
	}
	for _, comm := range []string{"nginx-worker-15", "", "ngin"} {
		clear(rec[120:])
		copy(rec[120:], comm)
		if err := decodeEvent(rec, clock, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Comm != comm {
			t.Errorf("command %q decoded as %q", comm, ev.Comm)
		}
	}
}
