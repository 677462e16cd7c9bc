package ebpfflowreceiver // import "github.com/flowattr/flowattr/receiver/ebpfflowreceiver"

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gaissmai/bart"
	"go.uber.org/zap"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/tracer"
)

// ownershipSource maps local addresses to owners. It is the one interface the
// receiver needs from where ownership comes from: static configuration, a
// file, and later kubelet pods or cgroups.
type ownershipSource interface {
	// Name is the source's name in ownership.precedence.
	Name() string
	// Start begins watching for changes; onChange is called (from any
	// goroutine) after Entries changed.
	Start(ctx context.Context, onChange func()) error
	// Shutdown stops watching and waits for the source's goroutines.
	Shutdown() error
	// Entries returns the current map from prefix to canonical owner. The
	// caller must not modify it.
	Entries() map[netip.Prefix]owners.Owner
}

// staticSource is the configured entries plus, optionally, the host's own
// addresses. The host's addresses are listed again every refreshEvery: an
// address the host lost must stop being claimed for it, or the host would
// keep claiming it after it moved to someone else.
type staticSource struct {
	configured    map[netip.Prefix]owners.Owner
	host          hostIdentity
	listHostAddrs func() ([]netip.Addr, error) // nil when host_addresses is off
	refreshEvery  time.Duration
	logger        *zap.Logger

	mu        sync.RWMutex
	entries   map[netip.Prefix]owners.Owner
	hostAddrs []netip.Addr // sorted

	poll poller
}

// newStaticSource builds the static map; listHostAddrs is nil when the host's
// addresses are not wanted. Configured entries win over the host's addresses
// for the same prefix, as they are explicit.
func newStaticSource(cfg StaticSourceConfig, host hostIdentity, listHostAddrs func() ([]netip.Addr, error), refreshEvery time.Duration, logger *zap.Logger) (*staticSource, error) {
	s := &staticSource{
		configured:    map[netip.Prefix]owners.Owner{},
		host:          host,
		listHostAddrs: listHostAddrs,
		refreshEvery:  refreshEvery,
		logger:        logger,
	}
	for _, e := range cfg.Entries {
		prefixes, err := e.prefixes()
		if err != nil {
			return nil, err
		}
		o := owners.Owner{ID: e.Owner}
		for name, value := range e.Attributes {
			o.Attributes = append(o.Attributes, owners.Attribute{Name: name, Value: value})
		}
		o = o.Canonical()
		for _, p := range prefixes {
			s.configured[p] = o
		}
	}
	var addrs []netip.Addr
	if listHostAddrs != nil {
		var err error
		if addrs, err = listHostAddrs(); err != nil {
			return nil, fmt.Errorf("listing the host's addresses for ownership.static.host_addresses: %w", err)
		}
	}
	s.setHostAddrs(addrs)
	return s, nil
}

func (*staticSource) Name() string { return sourceStatic }

func (s *staticSource) Entries() map[netip.Prefix]owners.Owner {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.entries
}

func (s *staticSource) Start(_ context.Context, onChange func()) error {
	if s.listHostAddrs != nil {
		s.poll.start(s.refreshEvery, s.refreshHostAddrs, onChange)
	}
	return nil
}

func (s *staticSource) Shutdown() error {
	s.poll.shutdown()
	return nil
}

// refreshHostAddrs lists the host's addresses again and reports whether the
// map changed. A failed listing keeps the previous addresses.
func (s *staticSource) refreshHostAddrs() bool {
	addrs, err := s.listHostAddrs()
	if err != nil {
		s.logger.Warn("Cannot list the host's addresses; keeping the previous list", zap.Error(err))
		return false
	}
	return s.setHostAddrs(addrs)
}

// setHostAddrs rebuilds the map for addrs and reports whether they changed.
func (s *staticSource) setHostAddrs(addrs []netip.Addr) bool {
	addrs = slices.Clone(addrs)
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.entries != nil && slices.Equal(addrs, s.hostAddrs) {
		return false
	}
	entries := make(map[netip.Prefix]owners.Owner, len(addrs)+len(s.configured))
	for _, a := range addrs {
		entries[netip.PrefixFrom(a, a.BitLen())] = s.host.owner()
	}
	maps.Copy(entries, s.configured)
	s.entries, s.hostAddrs = entries, addrs
	return true
}

// hostUnicastAddrs returns the host's addresses that can identify it to
// peers: not loopback, link-local, multicast or unspecified, as every host
// has those and claiming them would collide with every other host's claims.
func hostUnicastAddrs() ([]netip.Addr, error) {
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, ia := range ifAddrs {
		ipNet, ok := ia.(*net.IPNet)
		if !ok {
			continue
		}
		a, ok := netip.AddrFromSlice(ipNet.IP)
		if !ok {
			continue
		}
		a = flowschema.CanonicalAddr(a)
		if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified() {
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

// ownerEntry is a resolved owner of a prefix. Entries are immutable and
// shared by all lookups of one snapshot.
type ownerEntry struct {
	owner owners.Owner
	// key identifies the owner (ID and attributes): a prefix whose owner
	// has the same key across a rebuild keeps its entry.
	key string
	// since is when this receiver started to know every address of the
	// prefix that the prefix resolves as this owner's: claims for them
	// never start earlier. sinceBoot is the same moment on the kernel's
	// boot clock, which flows are compared with (see knownFrom).
	since     time.Time
	sinceBoot time.Duration
	// initial marks an entry made before the receiver started capturing:
	// it predates every flow the receiver sees.
	initial bool
}

// knownFrom reports whether the receiver knew e's owner for e's addresses
// from a flow's start on, given on the wall clock and on the kernel's boot
// clock: whether the flow is this owner's throughout. A flow that began
// before its address's owner changed, or before the receiver learnt it, is
// not. Both clocks must agree. The boot clock never steps, but a flow's
// wall-clock start is converted with the clock offset of when the tracer
// read it: a step between its start and then moves it across since. The
// wall-clock start is what the processor claims from, so it must not lie
// before since either (the tracer's offset lags a step by up to a second).
func (e *ownerEntry) knownFrom(start time.Time, startBoot time.Duration) bool {
	return e.initial || (startBoot >= e.sinceBoot && !start.Before(e.since))
}

// heldThroughout reports whether e's owner held the local address of ev's
// connection for all of it, as far as the receiver knows. A connection of
// unknown birth (StartKnown false) may be older than ev.Start: only an
// owner known since before capture held its address throughout.
func (e *ownerEntry) heldThroughout(ev *tracer.Event) bool {
	if !ev.StartKnown {
		return e.initial
	}
	return e.knownFrom(ev.Start, ev.StartBoot)
}

func ownerKey(o owners.Owner) string {
	var b strings.Builder
	b.WriteString(o.ID)
	for _, a := range o.Attributes {
		b.WriteByte(0)
		b.WriteString(a.Name)
		b.WriteByte(0)
		b.WriteString(a.Value)
	}
	return b.String()
}

// ownershipSnapshot is the merged map of all sources at one moment.
type ownershipSnapshot struct {
	table    bart.Table[*ownerEntry]
	byPrefix map[netip.Prefix]*ownerEntry
	// addresses are the single-address prefixes: heartbeats claim them
	// periodically even when they see no traffic.
	addresses map[netip.Addr]*ownerEntry
	// fallbacks are the addresses that lost their single-address entry
	// and resolve to a wider prefix's: heartbeats claim them like
	// addresses, for a while (see fallback).
	fallbacks map[netip.Addr]fallback
}

// lookup returns the owner of addr by longest-prefix match.
func (s *ownershipSnapshot) lookup(addr netip.Addr) (*ownerEntry, bool) {
	return s.table.Lookup(addr)
}

// maxRetiredPerInterval bounds the retired addresses kept for one heartbeat
// interval, so that a source flapping many addresses cannot exhaust memory.
const maxRetiredPerInterval = 1 << 16

// fallbackClaimFor is how long heartbeats claim an address that fell back to
// a wider prefix's owner (see fallback). The owner that held the address
// before is claimed up to the fall-back, so once the wider owner has been
// claimed for longer than merge_gap the processor cannot join that owner's
// claims across the fall-back. 10 minutes is comfortably longer than any
// merge_gap worth having (30 s by default), and spares claiming every
// address a wide prefix ever took back for good.
const fallbackClaimFor = 10 * time.Minute

// maxFallbacks bounds the fallbacks of a snapshot, so that a source removing
// many addresses inside wide prefixes cannot exhaust memory.
const maxFallbacks = 1 << 16

// fallback is an address whose single-address entry a rebuild removed and
// that resolves to a wider prefix's entry instead. Nothing else claims the
// wider owner for it without traffic: the processor would join the claims
// of the owner around its tenure (merge_gap), attributing flows of that
// tenure to it, when the address soon returns to that owner.
type fallback struct {
	entry *ownerEntry
	// started is when the address fell back to entry's owner: it is
	// claimed from then until fallbackClaimFor later. A fallback that
	// follows the address to a renewed entry of the same owner keeps it,
	// and is claimed from it too, although the renewed entry is known only
	// from its renewal: the owner held the address throughout.
	started time.Time
}

// until is when heartbeats stop claiming f.
func (f fallback) until() time.Time { return f.started.Add(fallbackClaimFor) }

// fallbackMove is what a rebuild found for an address that had a fallback
// (prev) or lost its single-address entry (prev nil): next is the wider
// prefix's entry it resolves to now, nil when it resolves to none or has a
// single-address entry. The fallback is decided when the rebuild is
// published, which dates it.
type fallbackMove struct {
	addr netip.Addr
	prev *fallback
	next *ownerEntry
}

// started is when m's fallback started, now for a new one.
func (m fallbackMove) started(now time.Time) time.Time {
	if m.prev != nil {
		return m.prev.started
	}
	return now
}

// retiredAddress is a single address, or a fallback, whose entry a rebuild
// replaced or removed: the entry held it until then. Periodic claims cover
// only the addresses of the snapshot at the interval's close, so without
// this an owner that held an address for part of an interval would not be
// claimed for it, and the processor could bridge the claims of the owner
// before and after it across its tenure.
type retiredAddress struct {
	addr  netip.Addr
	entry *ownerEntry
	until time.Time
}

// ownership merges the sources into snapshots that readers load without
// locking.
type ownership struct {
	sources []ownershipSource // highest precedence first
	now     func() time.Time
	bootNow func() time.Duration // the kernel's boot clock, see ownerEntry.sinceBoot
	logger  *zap.Logger

	mu        sync.Mutex // serializes rebuilds
	capturing bool       // start has returned: new entries are not initial; under mu

	// pubMu guards publishing a snapshot together with the single
	// addresses it retired, so that closeInterval takes both as of one
	// moment without waiting for a rebuild's merge.
	pubMu   sync.Mutex
	current atomic.Pointer[ownershipSnapshot]
	// Single addresses retired since the last closeInterval, at most
	// maxRetired, and how many more were dropped; under pubMu.
	retired        []retiredAddress
	maxRetired     int
	retiredDropped int
	// At most maxFallbacks fallbacks per snapshot, and how many more
	// were dropped since the last closeInterval; under pubMu.
	maxFallbacks     int
	fallbacksDropped int
	// closed is when the last interval closed: fallbacks claimed up to
	// then need no claim any more; under pubMu.
	closed time.Time
}

func newOwnership(sources []ownershipSource, now func() time.Time, bootNow func() time.Duration, logger *zap.Logger) *ownership {
	o := &ownership{sources: sources, now: now, bootNow: bootNow, logger: logger, maxRetired: maxRetiredPerInterval, maxFallbacks: maxFallbacks}
	o.rebuild()
	return o
}

// snapshot returns the current merged map.
func (o *ownership) snapshot() *ownershipSnapshot { return o.current.Load() }

// closeInterval closes the heartbeat interval at now: it returns the
// current merged map and takes the single addresses and fallbacks retired
// since the previous call, both as of one moment.
func (o *ownership) closeInterval(now time.Time) (*ownershipSnapshot, []retiredAddress) {
	o.pubMu.Lock()
	defer o.pubMu.Unlock()
	o.closed = now
	retired := o.retired
	o.retired = nil
	if o.retiredDropped > 0 {
		o.logger.Warn("Too many addresses changed owner in one heartbeat interval; the owners they left are not claimed for the part of the interval they held them",
			zap.Int("claimed", len(retired)), zap.Int("dropped", o.retiredDropped))
		o.retiredDropped = 0
	}
	snap := o.current.Load()
	if o.fallbacksDropped > 0 {
		o.logger.Warn("Too many addresses fell back to a wider prefix; the owners of the prefixes are not claimed for the rest",
			zap.Int("claimed", len(snap.fallbacks)), zap.Int("dropped", o.fallbacksDropped))
		o.fallbacksDropped = 0
	}
	return snap, retired
}

// rebuild merges the sources' current entries. For a prefix named by several
// sources the first in precedence wins; lookups then prefer the longest
// prefix whatever its source. A prefix that keeps its owner keeps its since
// time, so that reloading an unchanged file does not shorten claims, unless
// a narrower prefix inside it went away: the addresses of that one now
// resolve to it, and are its owner's only from now on. Such an address that
// was a single-address prefix keeps a fallback to it (see fallback).
func (o *ownership) rebuild() {
	o.mu.Lock()
	defer o.mu.Unlock()
	prev := o.current.Load()
	next := &ownershipSnapshot{
		byPrefix:  map[netip.Prefix]*ownerEntry{},
		addresses: map[netip.Addr]*ownerEntry{},
		fallbacks: map[netip.Addr]fallback{},
	}
	var made []*ownerEntry // entries new in next, dated when it is published
	for _, src := range o.sources {
		for p, owner := range src.Entries() {
			if _, taken := next.byPrefix[p]; taken {
				continue
			}
			key := ownerKey(owner)
			var e *ownerEntry
			if prev != nil {
				if old, ok := prev.byPrefix[p]; ok && old.key == key {
					e = old
				}
			}
			if e == nil {
				e = &ownerEntry{owner: owner, key: key, initial: !o.capturing}
				made = append(made, e)
			}
			next.byPrefix[p] = e
		}
	}
	if prev != nil {
		for p := range prev.byPrefix {
			if _, kept := next.byPrefix[p]; !kept {
				made = renewSupernets(next.byPrefix, prev.byPrefix, p, made)
			}
		}
	}
	for p, e := range next.byPrefix {
		next.table.Insert(p, e)
		if p.IsSingleIP() {
			next.addresses[p.Addr()] = e
		}
	}
	var retired []retiredAddress
	var moves []fallbackMove
	if prev != nil {
		for addr, f := range prev.fallbacks {
			moves = append(moves, fallbackMove{addr: addr, prev: &f, next: next.widerEntry(addr)})
		}
		for addr, e := range prev.addresses {
			if next.addresses[addr] != e {
				retired = append(retired, retiredAddress{addr: addr, entry: e})
				if w := next.widerEntry(addr); w != nil {
					moves = append(moves, fallbackMove{addr: addr, next: w})
				}
			}
		}
	}
	// Readers see the previous entries until the Store below: the new
	// ones are known, and the retired ones held their addresses, until
	// then, not from when the merge began.
	o.pubMu.Lock()
	defer o.pubMu.Unlock()
	now, nowBoot := o.now(), o.bootNow()
	for _, e := range made {
		e.since, e.sinceBoot = now, nowBoot
	}
	for _, r := range retired {
		r.until = now
		o.retire(r)
	}
	// At maxFallbacks the newest fallbacks are kept: a fallback keeps the
	// processor from joining claims across it only while the owner before
	// it could come back within merge_gap.
	slices.SortFunc(moves, func(a, b fallbackMove) int { return b.started(now).Compare(a.started(now)) })
	if now.Before(o.closed) {
		o.closed = now // the wall clock stepped back: claim again rather than drop
	}
	for _, m := range moves {
		o.moveFallback(next, m, now)
	}
	o.current.Store(next)
}

// retire keeps r for the interval's claims, unless maxRetired are kept
// already. Under pubMu.
func (o *ownership) retire(r retiredAddress) {
	if len(o.retired) >= o.maxRetired {
		o.retiredDropped++
		return
	}
	o.retired = append(o.retired, r)
}

// widerEntry returns the entry addr resolves to in s when that is a wider
// prefix's, nil when addr has a single-address entry or no owner.
func (s *ownershipSnapshot) widerEntry(addr netip.Addr) *ownerEntry {
	if _, ok := s.addresses[addr]; ok {
		return nil
	}
	e, ok := s.lookup(addr)
	if !ok {
		return nil
	}
	return e
}

// moveFallback decides, as of now, the fallback of m.addr in next, the
// snapshot being published: a fallback still on its entry, or on a renewed
// entry of the same owner, is kept while it needs claims; one whose address
// resolves to another owner, or to none, now ends, claimed up to then, and
// is followed by a new one if the address resolves to a wider prefix again
// before fallbackClaimFor passed. Fallbacks beyond maxFallbacks are dropped
// (see rebuild for which). Under pubMu.
func (o *ownership) moveFallback(next *ownershipSnapshot, m fallbackMove, now time.Time) {
	f := fallback{entry: m.next, started: now}
	if m.prev != nil {
		if m.next == m.prev.entry || (m.next != nil && m.next.key == m.prev.entry.key) {
			// The same owner, maybe a renewed entry of it: one tenure,
			// claimed from its start (see fallback.started), until an
			// interval closed past its until.
			if o.closed.Before(m.prev.until()) {
				o.addFallback(next, m.addr, fallback{entry: m.next, started: m.prev.started})
			}
			return
		}
		until := m.prev.until()
		if now.Before(until) {
			until = now
		}
		if o.closed.Before(until) {
			o.retire(retiredAddress{addr: m.addr, entry: m.prev.entry, until: until})
		}
		if m.next == nil || !now.Before(m.prev.until()) {
			return
		}
	}
	o.addFallback(next, m.addr, f)
}

// addFallback adds f to next unless it holds maxFallbacks. Under pubMu.
func (o *ownership) addFallback(next *ownershipSnapshot, addr netip.Addr, f fallback) {
	if len(next.fallbacks) >= o.maxFallbacks {
		o.fallbacksDropped++
		return
	}
	next.fallbacks[addr] = f
}

// renewSupernets gives every prefix of entries that strictly contains
// removed, and whose entry was carried over from prev, a new entry, which it
// appends to made: addresses of removed fall back to one of them, a new
// owner for those addresses. Entries made or renewed in this rebuild are new
// already. Comparing entries rather than since times holds when the wall
// clock stepped back and since lies ahead of now.
func renewSupernets(entries, prev map[netip.Prefix]*ownerEntry, removed netip.Prefix, made []*ownerEntry) []*ownerEntry {
	for bits := removed.Bits() - 1; bits >= 0; bits-- {
		q := netip.PrefixFrom(removed.Addr(), bits).Masked()
		if e, ok := entries[q]; ok && e == prev[q] {
			ne := &ownerEntry{owner: e.owner, key: e.key}
			entries[q] = ne
			made = append(made, ne)
		}
	}
	return made
}

// start starts every source, rebuilding the merged map when one changes.
// The receiver starts capturing after it returns: entries made until then
// are initial.
func (o *ownership) start(ctx context.Context) error {
	for i, src := range o.sources {
		if err := src.Start(ctx, o.rebuild); err != nil {
			for _, started := range slices.Backward(o.sources[:i]) {
				_ = started.Shutdown()
			}
			return err
		}
	}
	o.rebuild()
	o.mu.Lock()
	o.capturing = true
	o.mu.Unlock()
	return nil
}

func (o *ownership) shutdown() error {
	var firstErr error
	for _, src := range o.sources {
		if err := src.Shutdown(); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// poller runs refresh every interval on its own goroutine and calls onChange
// when refresh reports a change, until shutdown.
type poller struct {
	stop chan struct{}
	done sync.WaitGroup
}

func (p *poller) start(interval time.Duration, refresh func() bool, onChange func()) {
	p.stop = make(chan struct{})
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				if refresh() {
					onChange()
				}
			}
		}
	}()
}

// shutdown stops the goroutine and waits for it; it is a no-op when start
// was never called.
func (p *poller) shutdown() {
	if p.stop != nil {
		close(p.stop)
		p.done.Wait()
		p.stop = nil
	}
}
