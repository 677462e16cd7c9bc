package ebpfflowreceiver // import "github.com/flowattr/flowattr/receiver/ebpfflowreceiver"

import (
	"net/netip"
	"slices"
	"time"

	"github.com/flowattr/flowattr/internal/flowschema"
)

// Origins of heartbeats, the "origin" attribute of
// ebpfflow_claims_emitted.
const (
	// originFlow is a claim for an address seen in flows.
	originFlow = "flow"
	// originSource is a claim for an address an ownership source names,
	// with or without traffic: periodic, or up to when a source removed it
	// or gave it to another owner; and for an address a source removed
	// that falls back to a wider prefix's owner (see fallback).
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
// the current map, claimed to now, its fallbacks, claimed to now or their
// until, and those retired during the interval, claimed until they were.
func (h *heartbeats) claims(now time.Time, own *ownership) []claim {
	snap, retired := own.closeInterval(now)
	from := h.last
	if now.Before(from) {
		// The wall clock stepped back: claim nothing rather than a range
		// that ends before it starts, and restart the interval.
		h.last = now
		clear(h.seen)
		return nil
	}
	n := len(snap.addresses) + len(snap.fallbacks) + len(retired)
	out := make([]claim, 0, n+len(h.seen))
	// covered is the end of the claim made for a key from the sources:
	// flows seen under the entry up to then need no claim of their own.
	covered := make(map[heartbeatKey]time.Time, n)
	sourceClaim := func(addr netip.Addr, e *ownerEntry, since, until time.Time) {
		start := later(from, since)
		end := until
		if end.After(now) {
			end = now
		}
		if end.Before(start) {
			return // ended before the interval, or not known yet
		}
		k := heartbeatKey{addr: addr, entry: e}
		covered[k] = later(covered[k], end)
		out = append(out, claim{Claim: flowschema.Claim{Address: addr, Owner: e.owner, Start: start, End: end, Sender: h.source}, origin: originSource})
	}
	for _, r := range retired {
		sourceClaim(r.addr, r.entry, r.entry.since, r.until)
	}
	for addr, e := range snap.addresses {
		sourceClaim(addr, e, e.since, now)
	}
	for addr, f := range snap.fallbacks {
		// From the fall-back: a renewed entry of the same owner, which
		// f follows, is known only from its renewal.
		sourceClaim(addr, f.entry, f.started, f.until())
	}
	for k, r := range h.seen {
		start := later(later(r.start, from), k.entry.since)
		end := r.end
		if end.After(now) {
			end = now
		}
		if end.Before(start) {
			continue // seen only before the interval or the mapping
		}
		if c, ok := covered[k]; ok && !end.After(c) {
			continue // a claim from the sources covers the flows
		}
		out = append(out, claim{Claim: flowschema.Claim{Address: k.addr, Owner: k.entry.owner, Start: start, End: end, Sender: h.source}, origin: originFlow})
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
