package localowner // import "github.com/flowattr/flowattr/internal/localowner"

import (
	"net/netip"
	"time"
)

// fallbackClaimFor is how long claims cover an address that fell back to a
// wider prefix's owner (see fallback). The owner that held the address
// before is claimed up to the fall-back, so once the wider owner has been
// claimed for longer than merge_gap the processor cannot join that owner's
// claims across the fall-back. 10 minutes is comfortably longer than any
// merge_gap worth having (30 s by default), and spares claiming every
// address a wide prefix ever took back for good.
const fallbackClaimFor = 10 * time.Minute

// fallback is an address whose single-address entry a rebuild removed and
// that resolves to a wider prefix's entry instead. Nothing else claims the
// wider owner for it without traffic: the processor would join the claims
// of the owner around its tenure (merge_gap), attributing flows of that
// tenure to it, when the address soon returns to that owner.
type fallback struct {
	entry *Entry
	// started is when the address fell back to entry's owner: it is
	// claimed from then until fallbackClaimFor later. A fallback that
	// follows the address to a renewed entry of the same owner keeps it,
	// and is claimed from it too, although the renewed entry is known only
	// from its renewal: the owner held the address throughout.
	started time.Time
}

// until is when claims stop covering f.
func (f fallback) until() time.Time { return f.started.Add(fallbackClaimFor) }

// fallbackMove is what a rebuild found for an address that had a fallback
// (prev) or lost its single-address entry (prev nil): next is the wider
// prefix's entry it resolves to now, nil when it resolves to none or has a
// single-address entry. The fallback is decided when the rebuild is
// published, which dates it.
type fallbackMove struct {
	addr netip.Addr
	prev *fallback
	next *Entry
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
	entry *Entry
	until time.Time
}

// retire keeps r for the interval's claims, unless maxRetired are kept
// already. Under pubMu.
func (o *Ownership) retire(r retiredAddress) {
	if len(o.retired) >= o.maxRetired {
		o.retiredDropped++
		return
	}
	o.retired = append(o.retired, r)
}

// moveFallback decides, as of now, the fallback of m.addr in next, the
// snapshot being published: a fallback still on its entry, or on a renewed
// entry of the same owner, is kept while it needs claims; one whose address
// resolves to another owner, or to none, now ends, claimed up to then, and
// is followed by a new one if the address resolves to a wider prefix again
// before fallbackClaimFor passed. Fallbacks beyond maxFallbacks are dropped
// (see rebuild for which). Under pubMu.
func (o *Ownership) moveFallback(next *snapshot, m fallbackMove, now time.Time) {
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
func (o *Ownership) addFallback(next *snapshot, addr netip.Addr, f fallback) {
	if len(next.fallbacks) >= o.maxFallbacks {
		o.fallbacksDropped++
		return
	}
	next.fallbacks[addr] = f
}
