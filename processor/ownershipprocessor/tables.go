package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/gaissmai/bart"

	"github.com/flowattr/flowattr/internal/owners"
)

// addressTables are the prefix tables built from the configuration.
type addressTables struct {
	// workload holds workload_cidrs; nil with host unset means every
	// address.
	workload *bart.Lite
	// host holds the host's own addresses while workload_host_addresses
	// adds them to the workload ranges, else nil; setHostAddrs replaces
	// them as the host's addresses change.
	host *atomic.Pointer[map[netip.Addr]struct{}]
	// static maps ranges outside workload to their fixed owner.
	static *bart.Table[*owners.Owner]
	// senders maps a claim's sender to the ranges it may claim; nil means
	// any sender may claim any address.
	senders map[string]*bart.Lite
}

// isWorkload reports whether addr can be claimed.
func (t *addressTables) isWorkload(addr netip.Addr) bool {
	switch {
	case t.workload == nil && t.host == nil:
		return true
	case t.workload != nil && t.workload.Lookup(addr):
		return true
	case t.host != nil:
		_, ok := (*t.host.Load())[addr]
		return ok
	}
	return false
}

// setHostAddrs makes addrs the host's own addresses for isWorkload.
func (t *addressTables) setHostAddrs(addrs []netip.Addr) {
	set := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		set[a] = struct{}{}
	}
	t.host.Store(&set)
}

// mayClaim reports whether sender may claim addr.
func (t *addressTables) mayClaim(sender string, addr netip.Addr) bool {
	if t.senders == nil {
		return true
	}
	allowed, ok := t.senders[sender]
	return ok && allowed.Lookup(addr)
}

// tables parses the prefix settings; its errors name the offending field.
func (cfg *Config) tables() (*addressTables, error) {
	var errs []error
	t := &addressTables{static: new(bart.Table[*owners.Owner])}
	if len(cfg.WorkloadCIDRs) > 0 {
		t.workload = new(bart.Lite)
		for i, s := range cfg.WorkloadCIDRs {
			p, err := owners.ParsePrefix(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("workload_cidrs[%d]: %w", i, err))
				continue
			}
			t.workload.Insert(p)
		}
	}
	if cfg.WorkloadHostAddresses {
		t.host = new(atomic.Pointer[map[netip.Addr]struct{}])
		t.setHostAddrs(nil)
	}
	if err := t.addStatic(cfg.StaticOwners, cfg.OwnerLimits); err != nil {
		errs = append(errs, err)
	}
	if len(cfg.Senders) > 0 {
		t.senders = make(map[string]*bart.Lite, len(cfg.Senders))
		for _, name := range sortedKeys(cfg.Senders) {
			prefixes := cfg.Senders[name]
			if name == "" {
				errs = append(errs, errors.New("senders: a sender name must not be empty"))
				continue
			}
			if len(prefixes) == 0 {
				errs = append(errs, fmt.Errorf("senders[%s]: list the CIDR prefixes or addresses this sender may claim (a sender with none would have every claim rejected)", name))
				continue
			}
			allowed := new(bart.Lite)
			for i, s := range prefixes {
				p, err := owners.ParsePrefix(s)
				if err != nil {
					errs = append(errs, fmt.Errorf("senders[%s][%d]: %w", name, i, err))
					continue
				}
				allowed.Insert(p)
			}
			t.senders[name] = allowed
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

// addStatic adds the static_owners entries to t.static. They name owners
// within limits for addresses outside workload_cidrs, which must therefore
// be set and must not overlap them.
func (t *addressTables) addStatic(entries []owners.Entry, limits owners.Limits) error {
	if len(entries) == 0 {
		return nil
	}
	static, err := owners.ParseEntries("static_owners", entries, limits)
	if err != nil {
		return err
	}
	if t.workload == nil && t.host == nil {
		return errors.New("static_owners: static owners name addresses outside workload_cidrs, but workload_cidrs is empty (every address); set workload_cidrs to the ranges whose addresses are claimed")
	}
	var errs []error
	for _, p := range slices.SortedFunc(maps.Keys(static), comparePrefixes) {
		o := static[p]
		if t.workload != nil && t.workload.OverlapsPrefix(p) {
			errs = append(errs, fmt.Errorf("static_owners: %s (owner %s) overlaps workload_cidrs; addresses in workload_cidrs are attributed from claims only", p, o.ID))
			continue
		}
		t.static.Insert(p, &o)
	}
	return errors.Join(errs...)
}

// comparePrefixes orders prefixes by address, then length, so that errors
// do not depend on map iteration order.
func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// sortedKeys returns m's keys in order, so that errors and tables do not
// depend on map iteration order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
