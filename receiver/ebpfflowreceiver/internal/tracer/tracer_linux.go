package tracer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
)

// Tracer holds the loaded BPF programs, their links and maps. Read, Active
// and Stats may be called concurrently; Close ends them.
type Tracer struct {
	births, counters, listeners, events *ebpf.Map
	progs                               []*ebpf.Program
	links                               []link.Link
	iter                                *link.Iter
	ring                                *ringbuf.Reader
	clock                               *bootClock
	hooks                               Hooks

	activeMu sync.Mutex // one iterator pass at a time: it resets the listener set

	closeMu sync.RWMutex
	closed  bool
}

// New validates opts, loads the BPF objects and attaches them. Its error
// wraps ErrUnsupported when the kernel or the privileges cannot run them.
func New(opts Options) (*Tracer, error) {
	return newTracer(opts, testOptions{})
}

// testOptions are settings that only tests change.
type testOptions struct {
	// classicTracepoint skips tp_btf, so tests can exercise the fallback.
	classicTracepoint bool
	// maxListeners, if not zero, shrinks the listener set, so tests can
	// fill it.
	maxListeners int
}

// newTracer is New with the settings of tests.
func newTracer(opts Options, test testOptions) (*Tracer, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if _, err := btf.LoadKernelSpec(); err != nil {
		return nil, fmt.Errorf("%w: kernel BTF not available (needs CONFIG_DEBUG_INFO_BTF, /sys/kernel/btf/vmlinux): %w", ErrUnsupported, err)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("%w: cannot lift the memlock limit for BPF maps (needs root or CAP_SYS_RESOURCE on kernels before 5.11): %w", ErrUnsupported, err)
	}
	spec, err := loadFlow()
	if err != nil {
		return nil, fmt.Errorf("parsing embedded BPF object: %w", err)
	}
	spec.Maps["births"].MaxEntries = uint32(opts.MaxConnections)
	spec.Maps["events"].MaxEntries = uint32(opts.RingBufferSize)
	if test.maxListeners > 0 {
		spec.Maps["listeners"].MaxEntries = uint32(test.maxListeners)
	}

	var maps flowMaps
	if err := spec.LoadAndAssign(&maps, nil); err != nil {
		return nil, unsupported("creating BPF maps", err)
	}
	t := &Tracer{
		births:    maps.Births,
		counters:  maps.Counters,
		listeners: maps.Listeners,
		events:    maps.Events,
	}
	// Scratch and nat_prefixes are only used by programs once filled;
	// closing them here drops our handles.
	defer maps.Scratch.Close()
	defer maps.NatPrefixes.Close()
	if err := fillNATPrefixes(maps.NatPrefixes, opts.NATPrefixes); err != nil {
		t.Close()
		return nil, err
	}
	replacements := map[string]*ebpf.Map{
		"births": maps.Births, "counters": maps.Counters, "listeners": maps.Listeners,
		"events": maps.Events, "scratch": maps.Scratch, "nat_prefixes": maps.NatPrefixes,
	}
	if err := t.attach(spec, replacements, test.classicTracepoint); err != nil {
		t.Close()
		return nil, err
	}
	if t.ring, err = ringbuf.NewReader(maps.Events); err != nil {
		t.Close()
		return nil, unsupported("opening the ring buffer", err)
	}
	if t.clock, err = newBootClock(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// fillNATPrefixes writes prefixes into the nat_prefixes LPM trie, whose
// keys are 16-byte addresses: an IPv4 prefix is its IPv4-mapped form.
func fillNATPrefixes(m *ebpf.Map, prefixes []netip.Prefix) error {
	one := uint8(1)
	for _, p := range prefixes {
		p = p.Masked()
		key := flowNatKey{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As16()}
		if p.Addr().Is4() {
			key.Prefixlen += 96
		}
		if err := m.Update(&key, &one, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("adding NAT prefix %s: %w", p, err)
		}
	}
	return nil
}

// unsupported wraps a load or attach failure of a program the tracer cannot
// do without.
func unsupported(what string, err error) error {
	hint := ""
	if errors.Is(err, os.ErrPermission) {
		hint = " (needs root, or CAP_BPF and CAP_PERFMON)"
	}
	return fmt.Errorf("%w: %s%s: %w", ErrUnsupported, what, hint, err)
}

// loadProgram loads one program of spec against the already created maps.
func loadProgram(spec *ebpf.CollectionSpec, name string, maps map[string]*ebpf.Map) (*ebpf.Program, error) {
	var coll *ebpf.Collection
	one := spec.Copy()
	for n := range one.Programs {
		if n != name {
			delete(one.Programs, n)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(one, ebpf.CollectionOptions{MapReplacements: maps})
	if err != nil {
		return nil, err
	}
	prog := coll.DetachProgram(name)
	coll.Close()
	return prog, nil
}

func (t *Tracer) attach(spec *ebpf.CollectionSpec, maps map[string]*ebpf.Map, classicOnly bool) error {
	// The state-change hook: tp_btf, else the classic tracepoint.
	attachRawTp := func(p *ebpf.Program) (link.Link, error) {
		return link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachTraceRawTp})
	}
	btfErr := errors.New("skipped: classic tracepoint requested")
	if !classicOnly {
		btfErr = t.attachOne(spec, "inet_sock_set_state_btf", maps, attachRawTp)
	}
	if btfErr == nil {
		t.hooks.StateChange = "tp_btf"
	} else {
		tpErr := t.attachOne(spec, "inet_sock_set_state_tp", maps, func(p *ebpf.Program) (link.Link, error) {
			return link.Tracepoint("sock", "inet_sock_set_state", p, nil)
		})
		if tpErr != nil {
			return unsupported("attaching to the inet_sock_set_state tracepoint",
				fmt.Errorf("tp_btf: %w; classic tracepoint: %w", btfErr, tpErr))
		}
		t.hooks.StateChange = "tracepoint"
	}

	t.hooks.ServerProcessError = errors.Join(
		t.attachOne(spec, "sock_send_length", maps, attachRawTp),
		t.attachOne(spec, "sock_recv_length", maps, attachRawTp))
	t.hooks.ServerProcess = t.hooks.ServerProcessError == nil

	iterProg, err := loadProgram(spec, "active_connections", maps)
	if err != nil {
		return unsupported("loading the iter/tcp socket iterator", err)
	}
	t.progs = append(t.progs, iterProg)
	if t.iter, err = link.AttachIter(link.IterOptions{Program: iterProg}); err != nil {
		return unsupported("attaching the iter/tcp socket iterator", err)
	}
	return nil
}

func (t *Tracer) attachOne(spec *ebpf.CollectionSpec, name string, maps map[string]*ebpf.Map, attach func(*ebpf.Program) (link.Link, error)) error {
	prog, err := loadProgram(spec, name, maps)
	if err != nil {
		return fmt.Errorf("loading %s: %w", name, err)
	}
	l, err := attach(prog)
	if err != nil {
		prog.Close()
		return fmt.Errorf("attaching %s: %w", name, err)
	}
	t.progs = append(t.progs, prog)
	t.links = append(t.links, l)
	return nil
}

// Hooks reports which programs are attached.
func (t *Tracer) Hooks() Hooks { return t.hooks }

// readInterval bounds how long a record waits in the ring: the BPF side
// wakes the reader only when the ring is a quarter full.
const readInterval = 50 * time.Millisecond

// clockCheckEvery is how many records Read reads between looks at the wall
// clock for its refresh of the clock offset.
const clockCheckEvery = 64

// Read delivers ring buffer records (KindClosed, KindFailed and
// KindConnected) to handle until ctx is done or the Tracer is closed; it
// then returns nil. handle runs on Read's goroutine and must not block long
// or retain the *Event, which is reused. One Read at a time. A malformed
// record ends Read with an error.
func (t *Tracer) Read(ctx context.Context, handle func(*Event)) error {
	t.closeMu.RLock()
	if t.closed {
		t.closeMu.RUnlock()
		return nil
	}
	ring := t.ring
	t.closeMu.RUnlock()

	stop := context.AfterFunc(ctx, func() { _ = ring.Flush() })
	defer stop()

	var (
		rec ringbuf.Record
		ev  Event
	)
	ring.SetDeadline(time.Now().Add(readInterval))
	nextRefresh := time.Now().Add(t.clock.refreshEvery)
	for n := 0; ; n++ {
		err := ring.ReadInto(&rec)
		// Without this, a wall clock step would shift every record until
		// the next Active pass, or forever with active_interval 0. The
		// clock is read every clockCheckEvery records, as reading it costs
		// more than decoding one, and whenever the ring is idle.
		if n%clockCheckEvery == 0 || err != nil {
			if now := time.Now(); !now.Before(nextRefresh) {
				if err := t.clock.refresh(); err != nil {
					return err
				}
				nextRefresh = now.Add(t.clock.refreshEvery)
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			// The ring had no wakeup pending: records are read at least
			// this often.
			ring.SetDeadline(time.Now().Add(readInterval))
			continue
		case errors.Is(err, ringbuf.ErrFlushed):
			if ctx.Err() != nil {
				return nil
			}
			continue
		case errors.Is(err, ringbuf.ErrClosed), errors.Is(err, os.ErrClosed):
			return nil
		default:
			return fmt.Errorf("reading the ring buffer: %w", err)
		}
		if err := decodeEvent(rec.RawSample, t.clock, &ev); err != nil {
			return err
		}
		handle(&ev)
	}
}

// Active runs one pass of the TCP socket iterator and calls handle with a
// KindActive Event for each open connection, with its current counters.
// Sockets that predate the tracer get a birth entry here (Start = now,
// StartKnown false) so their close is reported by Read. handle must not
// retain the *Event, which is reused.
func (t *Tracer) Active(ctx context.Context, handle func(*Event)) error {
	t.activeMu.Lock()
	defer t.activeMu.Unlock()
	t.closeMu.RLock()
	defer t.closeMu.RUnlock()
	if t.closed {
		return os.ErrClosed
	}
	if err := t.clock.refresh(); err != nil {
		return err
	}
	if err := clearMap(t.listeners); err != nil {
		return fmt.Errorf("resetting the listener set: %w", err)
	}
	r, err := t.iter.Open()
	if err != nil {
		return fmt.Errorf("starting the socket iterator: %w", err)
	}
	defer r.Close()

	// The iterator writes whole records; a read returns one or more of them.
	buf := make([]byte, 64*eventSize)
	var ev Event
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := r.Read(buf)
		if n%eventSize != 0 {
			return fmt.Errorf("socket iterator returned %d bytes, not a multiple of the %d-byte record", n, eventSize)
		}
		for off := 0; off < n; off += eventSize {
			if derr := decodeEvent(buf[off:off+eventSize], t.clock, &ev); derr != nil {
				return derr
			}
			handle(&ev)
		}
		if n == 0 || err != nil {
			if err == nil || errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading the socket iterator: %w", err)
		}
	}
}

func clearMap(m *ebpf.Map) error {
	var (
		key  flowListenKey
		keys []flowListenKey
		val  uint8
	)
	it := m.Iterate()
	for it.Next(&key, &val) {
		keys = append(keys, key)
	}
	if err := it.Err(); err != nil {
		return err
	}
	for i := range keys {
		if err := m.Delete(&keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	return nil
}

// Stats returns the loss counters and the ring buffer fill level.
func (t *Tracer) Stats() (Stats, error) {
	t.closeMu.RLock()
	defer t.closeMu.RUnlock()
	if t.closed {
		return Stats{}, os.ErrClosed
	}
	lost, err := t.counter(counterLostEvents)
	if err != nil {
		return Stats{}, err
	}
	full, err := t.counter(counterBirthMapFull)
	if err != nil {
		return Stats{}, err
	}
	listenersFull, err := t.counter(counterListenerMapFull)
	if err != nil {
		return Stats{}, err
	}
	var misses uint64
	for _, p := range t.progs {
		st, err := p.Stats()
		if err != nil {
			return Stats{}, fmt.Errorf("reading program statistics: %w", err)
		}
		misses += st.RecursionMisses
	}
	return Stats{
		LostEvents:      lost,
		BirthMapFull:    full,
		ListenerMapFull: listenersFull,
		RecursionMisses: misses,
		RingBytesUsed:   t.ring.AvailableBytes(),
		RingBytesSize:   t.ring.BufferSize(),
	}, nil
}

// Counter indexes, as enum counter in bpf/flow.h.
const (
	counterLostEvents      uint32 = 0
	counterBirthMapFull    uint32 = 1
	counterListenerMapFull uint32 = 2
)

func (t *Tracer) counter(idx uint32) (uint64, error) {
	var perCPU []uint64
	if err := t.counters.Lookup(idx, &perCPU); err != nil {
		return 0, fmt.Errorf("reading counter %d: %w", idx, err)
	}
	var sum uint64
	for _, v := range perCPU {
		sum += v
	}
	return sum, nil
}

// Close detaches the programs and frees the maps; a blocked Read returns.
func (t *Tracer) Close() error {
	t.closeMu.Lock()
	defer t.closeMu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	var errs []error
	if t.ring != nil {
		errs = append(errs, t.ring.Close())
	}
	for _, l := range t.links {
		errs = append(errs, l.Close())
	}
	if t.iter != nil {
		errs = append(errs, t.iter.Close())
	}
	for _, p := range t.progs {
		errs = append(errs, p.Close())
	}
	for _, m := range []*ebpf.Map{t.births, t.counters, t.listeners, t.events} {
		errs = append(errs, m.Close())
	}
	return errors.Join(errs...)
}
