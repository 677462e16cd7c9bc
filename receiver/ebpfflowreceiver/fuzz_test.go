package ebpfflowreceiver

import (
	"testing"
)

func FuzzParseOwnershipFile(f *testing.F) {
	for _, seed := range []string{
		"10.0.0.1: a\n",
		"10.0.1.0/24: {id: pool, attributes: {service.name: batch, k8s.namespace.name: shop}}\n",
		`{"::ffff:10.0.0.2": {"id": "c"}, "2001:db8::/32": "v6"}`,
		"{}",
		"",
		"10.0.0.1: {id: a, attributes: {b: 1, b: 2}}\n",
		"10.0.0.1: &x a\n10.0.0.2: *x\n",
		"? [a]\n: b\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseOwnershipFile(data)
		if err != nil {
			if m != nil {
				t.Fatalf("error %v with a non-nil map", err)
			}
			return
		}
		for p, o := range m {
			if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
				t.Fatalf("accepted non-canonical prefix %s", p)
			}
			if o.ID == "" {
				t.Fatalf("accepted an empty owner ID for %s", p)
			}
			if !o.Equal(o.Canonical()) {
				t.Fatalf("owner of %s is not canonical: %+v", p, o)
			}
			for _, a := range o.Attributes {
				if checkOwnerAttributeName(a.Name) != nil {
					t.Fatalf("accepted attribute name %q for %s", a.Name, p)
				}
			}
		}
	})
}
