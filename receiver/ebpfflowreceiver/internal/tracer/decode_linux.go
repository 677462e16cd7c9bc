package tracer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"
	"time"
)

// eventSize is sizeof(struct flow_event) in bpf/flow.h.
const eventSize = 136

// Values of flow_event.flags, as in bpf/flow.h.
const eventStartUnknown = 0x1

// decodeEvent fills ev from one flow_event record. The BPF objects are built
// for little-endian targets only (bpfel), so the byte order is fixed. When
// the record's command is the one ev held, ev keeps that string: records of
// one process follow each other, and the copy would be garbage.
func decodeEvent(b []byte, clock *bootClock, ev *Event) error {
	if len(b) < eventSize {
		return fmt.Errorf("flow record of %d bytes, want %d", len(b), eventSize)
	}
	le := binary.LittleEndian
	prevComm := ev.Comm
	kind := Kind(b[116])
	if kind < KindClosed || kind > KindConnected {
		return fmt.Errorf("flow record of unknown kind %d", kind)
	}
	role := Role(b[117])
	if role > RoleServer {
		return fmt.Errorf("flow record of unknown role %d", role)
	}
	*ev = Event{
		Kind:             kind,
		Role:             role,
		LocalAddr:        netip.AddrFrom16([16]byte(b[0:16])).Unmap(),
		PeerAddr:         netip.AddrFrom16([16]byte(b[16:32])).Unmap(),
		LocalPort:        le.Uint16(b[32:]),
		PeerPort:         le.Uint16(b[34:]),
		Cookie:           le.Uint64(b[40:]),
		Start:            clock.wall(le.Uint64(b[48:])),
		StartBoot:        time.Duration(le.Uint64(b[48:])),
		StartKnown:       b[118]&eventStartUnknown == 0,
		End:              clock.wall(le.Uint64(b[56:])),
		BytesSent:        le.Uint64(b[64:]),
		BytesReceived:    le.Uint64(b[72:]),
		CgroupID:         le.Uint64(b[80:]),
		SegmentsSent:     le.Uint32(b[88:]),
		SegmentsReceived: le.Uint32(b[92:]),
		Retransmits:      le.Uint32(b[96:]),
		SRTT:             time.Duration(le.Uint32(b[100:])) * time.Microsecond,
		PID:              le.Uint32(b[104:]),
		NetnsInode:       le.Uint32(b[108:]),
		Err:              syscall.Errno(le.Uint32(b[112:])),
	}
	comm := b[120:136]
	if i := bytes.IndexByte(comm, 0); i >= 0 {
		comm = comm[:i]
	}
	if string(comm) == prevComm {
		ev.Comm = prevComm
	} else {
		ev.Comm = string(comm)
	}
	return nil
}
