package owners

import (
	"errors"
	"fmt"
	"net/netip"
)

// IDAttribute is the name reserved for the owner's ID where an owner is
// written as attributes (flowattr.peer.owner.id): no owner attribute may
// take it.
const IDAttribute = "id"

// Entry is the one configuration shape that maps prefixes to an owner. The
// receiver's ownership.static.entries, the entries of an ownership file and
// the processor's static_owners are lists of it:
//
//   - prefixes: [10.0.1.7, 10.0.2.0/24]
//     id: checkout
//     attributes: {service.name: checkout}
type Entry struct {
	// Prefixes are IP addresses or CIDR prefixes (see ParsePrefix).
	Prefixes []string `mapstructure:"prefixes" yaml:"prefixes"`
	// ID is the owner's stable ID.
	ID string `mapstructure:"id" yaml:"id"`
	// Attributes describe the owner, for example service.name.
	Attributes map[string]string `mapstructure:"attributes" yaml:"attributes"`
}

// Owner returns the entry's owner, canonical, or an error naming the field
// at fault; an owner beyond limits is an error too.
func (e *Entry) Owner(limits Limits) (Owner, error) {
	if e.ID == "" {
		return Owner{}, errors.New("id: must not be empty")
	}
	o := Owner{ID: e.ID}
	for name, value := range e.Attributes {
		if err := CheckAttributeName(name); err != nil {
			return Owner{}, fmt.Errorf("attributes: %w", err)
		}
		o.Attributes = append(o.Attributes, Attribute{Name: name, Value: value})
	}
	o = o.Canonical()
	if err := limits.Check(o); err != nil {
		return Owner{}, err
	}
	return o, nil
}

// ParsedPrefixes parses the entry's prefixes; there must be at least one.
func (e *Entry) ParsedPrefixes() ([]netip.Prefix, error) {
	if len(e.Prefixes) == 0 {
		return nil, errors.New("prefixes: must list at least one address or CIDR prefix")
	}
	out := make([]netip.Prefix, 0, len(e.Prefixes))
	for _, s := range e.Prefixes {
		p, err := ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("prefixes: %w", err)
		}
		out = append(out, p)
	}
	return out, nil
}

// ParseEntries maps every prefix of entries to its entry's owner. A prefix
// given twice, in one entry or two, is an error: it would silently go to
// one of them; so is an owner beyond limits. Errors name the entry by its
// index under field, for example "static_owners[2].id: must not be empty",
// and are all returned joined.
func ParseEntries(field string, entries []Entry, limits Limits) (map[netip.Prefix]Owner, error) {
	out := make(map[netip.Prefix]Owner)
	first := make(map[netip.Prefix]int)
	var errs []error
	for i := range entries {
		at := fmt.Sprintf("%s[%d]", field, i)
		o, err := entries[i].Owner(limits)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.%w", at, err))
			continue
		}
		ps, err := entries[i].ParsedPrefixes()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.%w", at, err))
			continue
		}
		for _, p := range ps {
			if j, dup := first[p]; dup {
				errs = append(errs, fmt.Errorf("%s.prefixes: %s is already in %s[%d]; give each address or prefix one owner", at, p, field, j))
				continue
			}
			first[p] = i
			out[p] = o
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// CheckAttributeName rejects names that cannot be written under an owner
// attribute prefix: empty, or the reserved IDAttribute.
func CheckAttributeName(name string) error {
	if name == "" {
		return errors.New("attribute name must not be empty")
	}
	if name == IDAttribute {
		return fmt.Errorf("attribute name %q is reserved for the owner ID", name)
	}
	return nil
}
