package intervalstore

import (
	"strings"
	"testing"
	"unsafe"
)

// TestInternedOwnersShareNames checks that owners interned from separately
// allocated names point at one copy of each name.
func TestInternedOwnersShareNames(t *testing.T) {
	s := newModelStore(t, 0, 0)
	name := func() string { return strings.Clone("service.name") }
	for k, id := range []string{"a", "b"} {
		if _, err := s.Apply(k, Owner{ID: id, Attributes: []Attribute{{name(), id}}}, at(0), at(10)); err != nil {
			t.Fatal(err)
		}
	}
	a, b := s.Lookup(0, at(5)).Owner, s.Lookup(1, at(5)).Owner
	if a == nil || b == nil {
		t.Fatalf("owners %v, %v", a, b)
	}
	if a.Attributes[0].Name != "service.name" || unsafe.StringData(a.Attributes[0].Name) != unsafe.StringData(b.Attributes[0].Name) {
		t.Fatalf("names %q at %p and %q at %p: not one copy", a.Attributes[0].Name, unsafe.StringData(a.Attributes[0].Name), b.Attributes[0].Name, unsafe.StringData(b.Attributes[0].Name))
	}
}
