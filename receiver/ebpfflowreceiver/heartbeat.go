package ebpfflowreceiver // import "github.com/flowattr/flowattr/receiver/ebpfflowreceiver"

import (
	"net/netip"
	"slices"
	"time"

	"github.com/flowattr/flowattr/internal/flowschema"
)

// Origins of heartbeats, the "origin" attribute of
// ebpfflow_heartbeats_emitted.
const (
	// originFlow is a claim for an address seen in flows.
	originFlow = "flow"
	// originSource is a claim for an address an ownership source names,
	// with or without traffic: periodic, or up to when a source removed it
	// or gave it to another owner.
	originSource = "source"
)

// heartbeatKey is an address and the entry it resolved to. Keying by entry
// rather than by owner keeps apart two tenures of one owner with another's
// in between: each is claimed from its own entry's since only.
type heartbeatKey struct {
	addr  netip.Addr
	entry *ownerEntry
}

// seenRange is what flows showed about one (address, entry) in an interval.
type seenRange struct {
	start, end time.Time
}

// heartbeats aggregates the local addresses seen in flows into one claim per
// (address, owner entry) per interval, and adds claims for the single
// addresses the ownership sources name. It is used by one goroutine.
//
// Every claim lies within the interval [last, now] and never starts before
// the receiver learnt the owner (ownerEntry.since): the owner is known at
// capture time only, so a claim asserts only what was observed while the
// mapping was in effect. Periodic claims of consecutive intervals touch (one
// ends where the next starts), so the ownership processor merges them into
// one continuous range.
type heartbeats struct {
	source string
	last   time.Time // end of the previous interval
	seen   map[heartbeatKey]*seenRange
}

func newHeartbeats(source string, start time.Time) *heartbeats {
	return &heartbeats{source: source, last: start, seen: map[heartbeatKey]*seenRange{}}
}

// observe records a flow from addr, owned by e, over [start, end].
func (h *heartbeats) observe(addr netip.Addr, e *ownerEntry, start, end time.Time) {
	k := heartbeatKey{addr: addr, entry: e}
	if r, ok := h.seen[k]; ok {
		if start.Before(r.start) {
			r.start = start
		}
		if end.After(r.end) {
			r.end = end
		}
		return
	}
	h.seen[k] = &seenRange{start: start, end: end}
}

// claim is a heartbeat to emit and why.
type claim struct {
	flowschema.Claim
	origin string
}

// claims closes the interval at now and returns its claims, sorted by
// address then start. own provides the sources' single addresses: those of
// the current map, claimed to now, and those retired during the interval,
// claimed until they were.
func (h *heartbeats) claims(now time.Time, own *ownership) []claim {
	snap, retired := own.closeInterval()
	from := h.last
	if now.Before(from) {
		// The wall clock stepped back: claim nothing rather than a range
		// that ends before it starts, and restart the interval.
		h.last = now
		clear(h.seen)
		return nil
	}
	out := make([]claim, 0, len(snap.addresses)+len(retired)+len(h.seen))
	covered := make(map[heartbeatKey]bool, len(snap.addresses)+len(retired))
	for _, r := range retired {
		start := later(from, r.entry.since)
		end := r.until
		if end.After(now) {
			end = now
		}
		if end.Before(start) {
			continue // retired before the interval
		}
		// Flows seen under the entry were seen before it was retired.
		covered[heartbeatKey{addr: r.addr, entry: r.entry}] = true
		out = append(out, claim{Claim: flowschema.Claim{Address: r.addr, Owner: r.entry.owner, Start: start, End: end, Source: h.source}, origin: originSource})
	}
	for addr, e := range snap.addresses {
		start := later(from, e.since)
		if start.After(now) {
			continue
		}
		covered[heartbeatKey{addr: addr, entry: e}] = true
		out = append(out, claim{Claim: flowschema.Claim{Address: addr, Owner: e.owner, Start: start, End: now, Source: h.source}, origin: originSource})
	}
	for k, r := range h.seen {
		if covered[k] {
			continue // the periodic claim covers the entry's part of the interval
		}
		start := later(later(r.start, from), k.entry.since)
		end := r.end
		if end.After(now) {
			end = now
		}
		if end.Before(start) {
			continue // seen only before the interval or the mapping
		}
		out = append(out, claim{Claim: flowschema.Claim{Address: k.addr, Owner: k.entry.owner, Start: start, End: end, Source: h.source}, origin: originFlow})
	}
	clear(h.seen)
	h.last = now
	slices.SortFunc(out, func(a, b claim) int {
		if c := a.Address.Compare(b.Address); c != 0 {
			return c
		}
		return a.Start.Compare(b.Start)
	})
	return out
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
