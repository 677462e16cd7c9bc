package owners

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseEntries(t *testing.T) {
	got, err := ParseEntries("static_owners", []Entry{
		{Prefixes: []string{"10.0.1.7", "10.0.2.0/24"}, ID: "checkout", Attributes: map[string]string{"service.name": "checkout", "k8s.namespace.name": "shop"}},
		{Prefixes: []string{"::ffff:10.0.3.1"}, ID: "batch"},
	}, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	checkout := Owner{ID: "checkout", Attributes: []Attribute{{Name: "k8s.namespace.name", Value: "shop"}, {Name: "service.name", Value: "checkout"}}}
	want := map[netip.Prefix]Owner{
		netip.MustParsePrefix("10.0.1.7/32"): checkout,
		netip.MustParsePrefix("10.0.2.0/24"): checkout,
		netip.MustParsePrefix("10.0.3.1/32"): {ID: "batch"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseEntries (-want +got):\n%s", diff)
	}
}

func TestParseEntriesErrorsNameTheEntry(t *testing.T) {
	_, err := ParseEntries("entries", []Entry{
		{Prefixes: []string{"10.0.0.1"}, ID: "a"},
		{Prefixes: []string{"10.0.0.1"}, ID: "b"},
		{Prefixes: []string{"10.0.0.2"}},
		{Prefixes: []string{"10.0.0.3"}, ID: "c", Attributes: map[string]string{"id": "x"}},
		{Prefixes: []string{"10.0.0.4"}, ID: "d", Attributes: map[string]string{"": "x"}},
		{ID: "e"},
		{Prefixes: []string{"10.0.0.5/8"}, ID: "f"},
		{Prefixes: []string{"10.0.0.6"}, ID: "g", Attributes: map[string]string{"a": "1", "b": "2", "c": "3"}},
		{Prefixes: []string{"10.0.0.7"}, ID: "h", Attributes: map[string]string{"service.name": strings.Repeat("x", 1<<20)}},
	}, Limits{MaxIDLength: 8, MaxAttributes: 2, MaxNameLength: 16, MaxValueLength: 16})
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{
		"entries[1].prefixes: 10.0.0.1/32 is already in entries[0]",
		"entries[2].id: must not be empty",
		`entries[3].attributes: attribute name "id" is reserved`,
		"entries[4].attributes: attribute name must not be empty",
		"entries[5].prefixes: must list at least one",
		`entries[6].prefixes: "10.0.0.5/8" has host bits set`,
		"entries[7].attributes: 3 attributes, more than max_attributes (2)",
		`entries[8].attributes: "service.name": value is 1048576 bytes, more than max_value_length (16)`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\ndoes not contain %q", err, want)
		}
	}
}

func TestCanonical(t *testing.T) {
	o := Owner{ID: "x", Attributes: []Attribute{{Name: "b", Value: "1"}, {Name: "a", Value: "2"}, {Name: "b", Value: "3"}}}
	got := o.Canonical()
	want := Owner{ID: "x", Attributes: []Attribute{{Name: "a", Value: "2"}, {Name: "b", Value: "3"}}}
	if !got.Equal(want) {
		t.Errorf("Canonical() = %+v, want %+v", got, want)
	}
	if o.Attributes[0].Name != "b" {
		t.Error("Canonical modified its receiver")
	}
}
