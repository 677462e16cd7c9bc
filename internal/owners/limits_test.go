package owners

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestLimitsCheck(t *testing.T) {
	l := Limits{MaxIDLength: 8, MaxAttributes: 2, MaxNameLength: 4, MaxValueLength: 6}
	attrs := func(kv ...string) []Attribute {
		var out []Attribute
		for i := 0; i+1 < len(kv); i += 2 {
			out = append(out, Attribute{Name: kv[i], Value: kv[i+1]})
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		owner Owner
		err   string // "" when within the limits
	}{
		{"at every limit", Owner{ID: "12345678", Attributes: attrs("abcd", "123456", "efgh", "")}, ""},
		{"no attributes", Owner{ID: "a"}, ""},
		{"long id", Owner{ID: "123456789"}, `id: "123456789" is 9 bytes, more than max_id_length (8)`},
		{"too many attributes", Owner{ID: "a", Attributes: attrs("a", "1", "b", "2", "c", "3")}, "attributes: 3 attributes, more than max_attributes (2)"},
		{"long name", Owner{ID: "a", Attributes: attrs("abcde", "1")}, `attributes: name "abcde" is 5 bytes, more than max_name_length (4)`},
		{"long value", Owner{ID: "a", Attributes: attrs("svc", "1234567")}, `attributes: "svc": value is 7 bytes, more than max_value_length (6)`},
		// The error quotes at most clipLength bytes of what it refuses.
		{"huge id", Owner{ID: strings.Repeat("x", 1<<20)}, `id: "` + strings.Repeat("x", clipLength) + `"... is 1048576 bytes, more than max_id_length (8)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := l.Check(tc.owner)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("Check = %v, want nil", err)
			case tc.err != "" && (err == nil || err.Error() != tc.err):
				t.Fatalf("Check = %v, want %q", err, tc.err)
			}
		})
	}
}

func TestLimitsValidate(t *testing.T) {
	if err := DefaultLimits().Validate("owner_limits"); err != nil {
		t.Fatalf("default limits: %v", err)
	}
	if err := (Limits{MaxIDLength: 1, MaxNameLength: 1, MaxValueLength: 1}).Validate("owner_limits"); err != nil {
		t.Fatalf("max_attributes 0: %v", err)
	}
	err := Limits{MaxIDLength: 0, MaxAttributes: -1, MaxNameLength: -2, MaxValueLength: 0}.Validate("ownership.owner_limits")
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{
		"ownership.owner_limits.max_id_length: must be positive, got 0",
		"ownership.owner_limits.max_attributes: must not be negative, got -1",
		"ownership.owner_limits.max_name_length: must be positive, got -2",
		"ownership.owner_limits.max_value_length: must be positive, got 0",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\ndoes not contain %q", err, want)
		}
	}
}

// FuzzLimitsCheck checks Check against its definition: an owner passes
// exactly when its ID, attribute count, names and values are all within
// the limits, and an error never quotes much more than clipLength bytes of
// the owner.
func FuzzLimitsCheck(f *testing.F) {
	f.Add("checkout", "service.name", "checkout", 3, 8, 2, 16, 16)
	f.Add(strings.Repeat("x", 300), "n", "v", 1, 256, 32, 256, 1024)
	f.Add("a", strings.Repeat("n", 100), strings.Repeat("v", 5000), 40, 256, 32, 64, 1024)
	f.Fuzz(func(t *testing.T, id, name, value string, n, maxID, maxAttrs, maxName, maxValue int) {
		n %= 64
		if n < 0 {
			n = -n
		}
		l := Limits{MaxIDLength: maxID, MaxAttributes: maxAttrs, MaxNameLength: maxName, MaxValueLength: maxValue}
		o := Owner{ID: id}
		for i := range n {
			o.Attributes = append(o.Attributes, Attribute{Name: name + strings.Repeat("_", i), Value: value})
		}
		within := len(id) <= maxID && n <= maxAttrs
		for _, a := range o.Attributes {
			within = within && len(a.Name) <= maxName && len(a.Value) <= maxValue
		}
		err := l.Check(o)
		if within != (err == nil) {
			t.Fatalf("Check(%d attributes) under %+v = %v, want within=%v", n, l, err, within)
		}
		if err != nil && !utf8.ValidString(err.Error()) {
			t.Fatalf("error is not valid UTF-8: %q", err)
		}
		if err != nil && len(err.Error()) > 4*clipLength+120 {
			t.Fatalf("error of %d bytes quotes too much: %q", len(err.Error()), err)
		}
	})
}
