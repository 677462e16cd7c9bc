package intervalstore

import (
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"
	"weak"

	"github.com/flowattr/flowattr/internal/owners"
)

// TestInternedOwnersShareNames checks that owners interned from separately
// allocated names point at one copy of each name.
func TestInternedOwnersShareNames(t *testing.T) {
	s := newModelStore(t, 0, 0)
	name := func() string { return strings.Clone("service.name") }
	for k, id := range []string{"a", "b"} {
		if _, err := s.Apply(k, owners.Owner{ID: id, Attributes: []owners.Attribute{{Name: name(), Value: id}}}, at(0), at(10)); err != nil {
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

// TestPruneLetsOwnersGo checks that an owner Prune forgets is no longer
// reachable from the store, even while no new owner reuses its number.
func TestPruneLetsOwnersGo(t *testing.T) {
	clk := &clock{t: sec(0)}
	s, err := New[int](Config{Retention: 100 * time.Second, MaxKeys: 10, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(0, owners.Owner{ID: "gone", Attributes: []owners.Attribute{{Name: "service.name", Value: "old"}}}, sec(0), sec(10)); err != nil {
		t.Fatal(err)
	}
	gone := weak.Make(s.Lookup(0, sec(5)).Owner)
	if gone.Value() == nil {
		t.Fatal("no owner to watch")
	}
	clk.Set(sec(200))
	if _, keys := s.Prune(); keys != 1 {
		t.Fatalf("Prune dropped %d keys, want 1", keys)
	}
	runtime.GC()
	if gone.Value() != nil {
		t.Fatal("the owner Prune forgot is still reachable")
	}
	runtime.KeepAlive(s) // the store, not only the owner, must stay
}
