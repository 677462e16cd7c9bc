// Package owners defines who holds an address: an Owner (a stable ID plus a
// few descriptive attributes), the one parser of address prefixes, and the
// one configuration shape that maps prefixes to owners, used by the
// receiver's static entries, the ownership file and the processor's
// static_owners. It depends on nothing but the standard library.
package owners // import "github.com/flowattr/flowattr/internal/owners"

import (
	"slices"
	"strings"
)

// Attribute is one descriptive name/value pair of an Owner, such as
// service.name=checkout or k8s.namespace.name=shop.
type Attribute struct {
	Name  string
	Value string
}

// Owner is who holds an address during a range: a stable ID plus a few
// descriptive attributes. The ID alone decides identity for merging; the
// attributes travel with it to the records it is attributed to.
//
// Stores intern owners: every range of the same owner points at one shared,
// immutable *Owner. Callers must not modify an Owner returned by a store.
type Owner struct {
	ID         string
	Attributes []Attribute // sorted by Name, names unique; see Canonical
}

// Canonical returns o with its attributes sorted by name and duplicate names
// removed (the last value given for a name wins), so that equal owners have
// equal representations. It does not modify o.
func (o Owner) Canonical() Owner {
	if len(o.Attributes) == 0 {
		return Owner{ID: o.ID}
	}
	attrs := slices.Clone(o.Attributes)
	slices.SortStableFunc(attrs, func(a, b Attribute) int { return strings.Compare(a.Name, b.Name) })
	out := attrs[:0]
	for i, a := range attrs {
		if i+1 < len(attrs) && attrs[i+1].Name == a.Name {
			continue
		}
		out = append(out, a)
	}
	return Owner{ID: o.ID, Attributes: out}
}

// Equal reports whether o and p have the same ID and the same attributes in
// the same order. Compare canonical owners.
func (o Owner) Equal(p Owner) bool {
	return o.ID == p.ID && slices.Equal(o.Attributes, p.Attributes)
}
