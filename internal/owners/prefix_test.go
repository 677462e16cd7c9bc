package owners

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParsePrefix(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "10.0.0.7", want: "10.0.0.7/32"},
		{in: "fd00::1", want: "fd00::1/128"},
		{in: "10.0.0.0/8", want: "10.0.0.0/8"},
		{in: "::ffff:10.0.0.7", want: "10.0.0.7/32"},
		{in: "::ffff:10.0.0.0/104", want: "10.0.0.0/8"},
		{in: "::ffff:0:0/96", want: "0.0.0.0/0"},
		{in: "::/0", want: "::/0"},
		{in: "::ffff:0:0/95", err: "host bits set"},
		{in: "10.0.0.1/8", err: "host bits set; did you mean 10.0.0.0/8?"},
		{in: "fe80::1%eth0", err: "zoned"},
		{in: "", err: "neither an IP address nor a CIDR prefix"},
		{in: "10.0.0.0/33", err: "neither"},
		{in: "example.com", err: "neither"},
	} {
		p, err := ParsePrefix(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParsePrefix(%q) = %v, %v; want an error containing %q", tc.in, p, err, tc.err)
			}
			continue
		}
		if err != nil || p.String() != tc.want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
		}
	}
}

// FuzzParsePrefix checks that whatever ParsePrefix accepts is canonical: no
// IPv4-mapped address, no zone, no host bits, and parsing its own output
// gives it back.
func FuzzParsePrefix(f *testing.F) {
	for _, s := range []string{"10.0.0.7", "::ffff:10.0.0.0/104", "fd00::/8", "10.0.0.1/8", "fe80::1%eth0", "::ffff:1.2.3.4/128"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrefix(s)
		if err != nil {
			if p != (netip.Prefix{}) {
				t.Fatalf("ParsePrefix(%q) returned %v with error %v", s, p, err)
			}
			return
		}
		if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" || p.Masked() != p {
			t.Fatalf("ParsePrefix(%q) = %v, not canonical", s, p)
		}
		again, err := ParsePrefix(p.String())
		if err != nil || again != p {
			t.Fatalf("ParsePrefix(%q) = %v, but ParsePrefix(%q) = %v, %v", s, p, p.String(), again, err)
		}
	})
}
