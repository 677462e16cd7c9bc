package localowner // import "github.com/flowattr/flowattr/internal/localowner"

import (
	"net/netip"
	"slices"
	"time"

	"github.com/gaissmai/bart"

	"github.com/flowattr/flowattr/internal/owners"
)

// snapshot is the merged map of all sources at one moment.
type snapshot struct {
	table    bart.Table[*Entry]
	byPrefix map[netip.Prefix]*Entry
	// addresses are the single-address prefixes: claims cover them every
	// interval even when they see no traffic.
	addresses map[netip.Addr]*Entry
	// fallbacks are the addresses that lost their single-address entry
	// and resolve to a wider prefix's: claims cover them like addresses,
	// for a while (see fallback).
	fallbacks map[netip.Addr]fallback
}

// widerEntry returns the entry addr resolves to in s when that is a wider
// prefix's, nil when addr has a single-address entry or no owner.
func (s *snapshot) widerEntry(addr netip.Addr) *Entry {
	if _, ok := s.addresses[addr]; ok {
		return nil
	}
	e, ok := s.table.Lookup(addr)
	if !ok {
		return nil
	}
	return e
}

// rebuild merges the sources' current entries. For a prefix named by several
// sources the first in precedence wins; lookups then prefer the longest
// prefix whatever its source. A prefix that keeps its owner keeps its since
// time, so that reloading an unchanged file does not shorten claims, unless
// a narrower prefix inside it went away: the addresses of that one now
// resolve to it, and are its owner's only from now on. Such an address that
// was a single-address prefix keeps a fallback to it (see fallback).
func (o *Ownership) rebuild() {
	o.mu.Lock()
	defer o.mu.Unlock()
	prev := o.current.Load()
	next := &snapshot{
		byPrefix:  map[netip.Prefix]*Entry{},
		addresses: map[netip.Addr]*Entry{},
		fallbacks: map[netip.Addr]fallback{},
	}
	var made []*Entry // entries new in next, dated when it is published
	add := func(p netip.Prefix, owner owners.Owner, since time.Time) {
		if _, taken := next.byPrefix[p]; taken {
			return
		}
		key := ownerKey(owner)
		if prev != nil {
			if old, ok := prev.byPrefix[p]; ok && old.key == key {
				next.byPrefix[p] = old
				return
			}
		}
		e := &Entry{owner: owner, key: key, initial: !o.capturing, since: since}
		made = append(made, e)
		next.byPrefix[p] = e
	}
	for _, src := range o.sources {
		if ts, ok := src.(TimedSource); ok {
			for p, t := range ts.Tenures() {
				add(p, t.Owner, t.Since)
			}
			continue
		}
		for p, owner := range src.Entries() {
			add(p, owner, time.Time{})
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
	newAddresses := false
	for _, e := range made {
		e.published = now
		if e.since.IsZero() {
			e.since, e.sinceBoot = now, nowBoot
		} else {
			e.sinceBoot = nowBoot - now.Sub(e.since)
		}
	}
	for p, e := range next.byPrefix {
		if p.IsSingleIP() && e.published.Equal(now) && !e.initial {
			newAddresses = true
			break
		}
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
	if newAddresses && o.newAddresses != nil {
		o.newAddresses()
	}
}

// renewSupernets gives every prefix of entries that strictly contains
// removed, and whose entry was carried over from prev, a new entry, which it
// appends to made: addresses of removed fall back to one of them, a new
// owner for those addresses. Entries made or renewed in this rebuild are new
// already. Comparing entries rather than since times holds when the wall
// clock stepped back and since lies ahead of now.
func renewSupernets(entries, prev map[netip.Prefix]*Entry, removed netip.Prefix, made []*Entry) []*Entry {
	for bits := removed.Bits() - 1; bits >= 0; bits-- {
		q := netip.PrefixFrom(removed.Addr(), bits).Masked()
		if e, ok := entries[q]; ok && e == prev[q] {
			ne := &Entry{owner: e.owner, key: e.key}
			entries[q] = ne
			made = append(made, ne)
		}
	}
	return made
}
