package ownershipprocessor // import "github.com/flowattr/flowattr/processor/ownershipprocessor"

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/gaissmai/bart"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
)

// addressTables are the CIDR tables built from the configuration.
type addressTables struct {
	// workload holds the ranges that send heartbeats; nil means every address.
	workload *bart.Lite
	// static maps ranges outside workload to their fixed owner.
	static *bart.Table[*owners.Owner]
	// sources maps a heartbeat source to the ranges it may claim; nil means
	// any source may claim any address.
	sources map[string]*bart.Lite
}

// isWorkload reports whether addr can be claimed by heartbeats.
func (t *addressTables) isWorkload(addr netip.Addr) bool {
	return t.workload == nil || t.workload.Lookup(addr)
}

// mayClaim reports whether source may claim addr.
func (t *addressTables) mayClaim(source string, addr netip.Addr) bool {
	if t.sources == nil {
		return true
	}
	allowed, ok := t.sources[source]
	return ok && allowed.Lookup(addr)
}

// tables parses the CIDR settings; its errors name the offending field.
func (cfg *Config) tables() (*addressTables, error) {
	var errs []error
	t := &addressTables{static: new(bart.Table[*owners.Owner])}
	if len(cfg.WorkloadCIDRs) > 0 {
		t.workload = new(bart.Lite)
		for i, s := range cfg.WorkloadCIDRs {
			p, err := parsePrefix(fmt.Sprintf("workload_cidrs[%d]", i), s)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			t.workload.Insert(p)
		}
	}
	for i, so := range cfg.StaticOwners {
		field := fmt.Sprintf("static_owners[%d]", i)
		p, err := parsePrefix(field+".cidr", so.CIDR)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if so.ID == "" {
			errs = append(errs, fmt.Errorf("%s.id must not be empty: name the owner of %s", field, p))
			continue
		}
		if t.workload == nil {
			errs = append(errs, fmt.Errorf("%s: static owners name addresses outside workload_cidrs, but workload_cidrs is empty (every address); set workload_cidrs to the ranges that send heartbeats", field))
			continue
		}
		if t.workload.OverlapsPrefix(p) {
			errs = append(errs, fmt.Errorf("%s.cidr %s overlaps workload_cidrs; addresses in workload_cidrs are attributed from heartbeats only", field, p))
			continue
		}
		if _, dup := t.static.Get(p); dup {
			errs = append(errs, fmt.Errorf("%s.cidr %s is listed twice in static_owners", field, p))
			continue
		}
		if _, ok := so.Attributes[flowschema.OwnerIDSuffix]; ok {
			errs = append(errs, fmt.Errorf("%s.attributes: %q is reserved for the owner ID; use the entry's id field", field, flowschema.OwnerIDSuffix))
			continue
		}
		if _, ok := so.Attributes[""]; ok {
			errs = append(errs, fmt.Errorf("%s.attributes: an attribute name must not be empty", field))
			continue
		}
		o := owners.Owner{ID: so.ID}
		for _, name := range sortedKeys(so.Attributes) {
			o.Attributes = append(o.Attributes, owners.Attribute{Name: name, Value: so.Attributes[name]})
		}
		o = o.Canonical()
		t.static.Insert(p, &o)
	}
	if len(cfg.Senders) > 0 {
		t.sources = make(map[string]*bart.Lite, len(cfg.Senders))
		for _, name := range sortedKeys(cfg.Senders) {
			cidrs := cfg.Senders[name]
			if name == "" {
				errs = append(errs, errors.New("sources: a source name must not be empty"))
				continue
			}
			if len(cidrs) == 0 {
				errs = append(errs, fmt.Errorf("sources[%s]: list the CIDRs this source may claim (a source with none would have every heartbeat rejected)", name))
				continue
			}
			allowed := new(bart.Lite)
			for i, s := range cidrs {
				p, err := parsePrefix(fmt.Sprintf("sources[%s][%d]", name, i), s)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				allowed.Insert(p)
			}
			t.sources[name] = allowed
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}
