package flowschema

import (
	"strings"
	"testing"
)

func FuzzHasKeyPrefix(f *testing.F) {
	for _, c := range [][2]string{
		{"flowattr.peer.owner.id", PrefixPeerOwner},
		{"flowattr.local.owner.id", PrefixPeerOwner},
		{"network.peer.address", PrefixLocalOwner},
		{"", ""},
		{"a", ""},
		{"", "a"},
		{"ab", "ab"},
		{"ab", "abc"},
	} {
		f.Add(c[0], c[1])
	}
	f.Fuzz(func(t *testing.T, k, prefix string) {
		if got, want := HasKeyPrefix(k, prefix), strings.HasPrefix(k, prefix); got != want {
			t.Fatalf("HasKeyPrefix(%q, %q) = %v, strings.HasPrefix %v", k, prefix, got, want)
		}
	})
}
