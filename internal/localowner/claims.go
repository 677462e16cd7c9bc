package localowner // import "github.com/flowattr/flowattr/internal/localowner"

import (
	"net/netip"
	"slices"
	"time"

	"github.com/flowattr/flowattr/internal/flowschema"
)

// Bases of claims: why a claim was made, the "basis" attribute of the
// receiver's ebpfflow_claims_emitted.
const (
	// BasisFlow is a claim for an address seen in flows.
	BasisFlow = "flow"
	// BasisSource is a claim for an address an ownership source names,
	// with or without traffic: periodic, or up to when a source removed it
	// or gave it to another owner; and, for 10 minutes, for an address a
	// source removed that falls back to a wider prefix's owner.
	BasisSource = "source"
)

// Claim is a claim to send and its basis (BasisFlow or BasisSource).
type Claim struct {
	flowschema.Claim
	Basis string
}

// claimKey is an address and the entry it resolved to. Keying by entry
// rather than by owner keeps apart two tenures of one owner with another's
// in between: each is claimed from its own entry's since only.
type claimKey struct {
	addr  netip.Addr
	entry *Entry
}

// seenRange is what flows showed about one (address, entry) in an interval.
type seenRange struct {
	start, end time.Time
}

// Claimer aggregates the local addresses seen in flows into one claim per
// (address, owner entry) per interval, and adds claims for the single
// addresses the ownership sources name. It is used by one goroutine.
//
// Every claim lies within the interval [previous close, now] and never
// starts before this host learnt the owner (see Source): the owner is
// known at capture time only, so a claim asserts only what was observed
// while the mapping was in effect. The one exception is a tenure that a
// TimedSource dated before its merge: its first claim starts at that date. Periodic claims of consecutive intervals
// touch (one ends where the next starts), so the ownership processor
// merges them into one continuous range.
type Claimer struct {
	own    *Ownership
	sender string
	last   time.Time // end of the previous interval
	// lastNew is when ClaimNew last ran: entries published since are new.
	lastNew time.Time
	// closedOnce is set by the first CloseInterval, which claims every
	// entry from its since.
	closedOnce bool
	seen       map[claimKey]*seenRange
}

// NewClaimer returns a Claimer of own's addresses whose claims name sender
// and whose first interval starts at start.
func NewClaimer(own *Ownership, sender string, start time.Time) *Claimer {
	return &Claimer{own: own, sender: sender, last: start, lastNew: start, seen: map[claimKey]*seenRange{}}
}

// Observe records a flow from addr, whose owner Lookup gave as e, over
// [start, end]. Call it for every flow whose local address has an owner,
// whether or not e's owner held it throughout: the claim covers only the
// part since e's owner was known.
func (c *Claimer) Observe(addr netip.Addr, e *Entry, start, end time.Time) {
	k := claimKey{addr: addr, entry: e}
	if r, ok := c.seen[k]; ok {
		if start.Before(r.start) {
			r.start = start
		}
		if end.After(r.end) {
			r.end = end
		}
		return
	}
	c.seen[k] = &seenRange{start: start, end: end}
}

// CloseInterval closes the interval at now and returns its claims, sorted by
// address then start: the single addresses of the sources' current map,
// claimed to now; the addresses that fell back to a wider prefix's owner,
// claimed to now or for 10 minutes from the fall-back; the single addresses
// whose owner changed during the interval, claimed for it up to the change;
// and the flows observed, where no claim above covers them. When the wall
// clock stepped back before the previous close it returns nothing and
// starts the next interval at now.
func (c *Claimer) CloseInterval(now time.Time) []Claim {
	snap, retired := c.own.closeInterval(now)
	from := c.last
	first := !c.closedOnce
	c.closedOnce = true
	if now.Before(from) {
		// The wall clock stepped back: claim nothing rather than a range
		// that ends before it starts, and restart the interval.
		c.last = now
		clear(c.seen)
		return nil
	}
	n := len(snap.addresses) + len(snap.fallbacks) + len(retired)
	out := make([]Claim, 0, n+len(c.seen))
	// covered is the end of the claim made for a key from the sources:
	// flows seen under the entry up to then need no claim of their own.
	covered := make(map[claimKey]time.Time, n)
	sourceClaim := func(addr netip.Addr, e *Entry, start, until time.Time) {
		end := until
		if end.After(now) {
			end = now
		}
		if end.Before(start) {
			return // ended before the interval, or not known yet
		}
		k := claimKey{addr: addr, entry: e}
		covered[k] = later(covered[k], end)
		out = append(out, Claim{Claim: flowschema.Claim{Address: addr, Owner: e.owner, Start: start, End: end, Sender: c.sender}, Basis: BasisSource})
	}
	for _, r := range retired {
		sourceClaim(r.addr, r.entry, claimFrom(r.entry, from, first), r.until)
	}
	for addr, e := range snap.addresses {
		sourceClaim(addr, e, claimFrom(e, from, first), now)
	}
	for addr, f := range snap.fallbacks {
		// From the fall-back: a renewed entry of the same owner, which
		// f follows, is known only from its renewal.
		sourceClaim(addr, f.entry, later(from, f.started), f.until())
	}
	for k, r := range c.seen {
		start := later(r.start, claimFrom(k.entry, from, first))
		end := r.end
		if end.After(now) {
			end = now
		}
		if end.Before(start) {
			continue // seen only before the interval or the mapping
		}
		if cov, ok := covered[k]; ok && !end.After(cov) {
			continue // a claim from the sources covers the flows
		}
		out = append(out, Claim{Claim: flowschema.Claim{Address: k.addr, Owner: k.entry.owner, Start: start, End: end, Sender: c.sender}, Basis: BasisFlow})
	}
	clear(c.seen)
	c.last = now
	slices.SortFunc(out, func(a, b Claim) int {
		if c := a.Address.Compare(b.Address); c != 0 {
			return c
		}
		return a.Start.Compare(b.Start)
	})
	return out
}

// ClaimNew returns claims, from their since to now, for the single
// addresses whose entries were published since the previous call (or the
// Claimer's start), without closing the interval: the next CloseInterval
// claims them again, from the same since, which the ownership processor
// joins. It spares a new address a wait of up to a claim interval for its
// first claim (see Settings.NewAddresses).
func (c *Claimer) ClaimNew(now time.Time) []Claim {
	snap := c.own.current.Load()
	var out []Claim
	for addr, e := range snap.addresses {
		if e.initial || e.published.Before(c.lastNew) || now.Before(e.since) {
			continue
		}
		out = append(out, Claim{Claim: flowschema.Claim{Address: addr, Owner: e.owner, Start: e.since, End: now, Sender: c.sender}, Basis: BasisSource})
	}
	c.lastNew = now
	slices.SortFunc(out, func(a, b Claim) int { return a.Address.Compare(b.Address) })
	return out
}

// claimFrom is where an interval that starts at from claims e from: from,
// or e's since when later, or e's since when e was published during the
// interval or this is the first interval (nothing claimed e yet), as a
// TimedSource may date a tenure before its merge.
func claimFrom(e *Entry, from time.Time, first bool) time.Time {
	if first || !e.published.Before(from) {
		return e.since
	}
	return later(from, e.since)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
