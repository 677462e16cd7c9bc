package ownershipprocessor

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/intervalstore"
	"github.com/flowattr/flowattr/internal/owners"
)

// TestWriteResultMatchesRewrite checks the one-pass writeResult against the
// plain rewrite (drop every key under the prefix and the reason, then put
// owner, status and reason) on random records: stale and forged owner keys,
// status and reason present or not, owners with few or many
// attributes. (Repeated keys: TestWriteResultRepeatedKeys.)
func TestWriteResultMatchesRewrite(t *testing.T) {
	prefix := flowschema.PrefixPeerOwner
	p := &ownershipProcessor{owners: flowschema.NewOwnerWriter(prefix)}
	r := rand.New(rand.NewPCG(5, 5))
	names := []string{"service.name", "k8s.namespace.name", "k8s.pod.name", "id", "x"}
	keys := []string{
		flowschema.AttrPeerAttributionStatus, flowschema.AttrPeerAttributionReason,
		flowschema.AttrNetworkPeerAddress, flowschema.PrefixLocalOwner + "id", prefix,
	}
	for _, n := range names {
		keys = append(keys, prefix+n)
	}
	randomOwner := func() *owners.Owner {
		switch r.IntN(4) {
		case 0:
			return nil
		case 1:
			// More attributes than writeResult's in-place mask holds.
			o := owners.Owner{ID: "big"}
			for i := range maxOwnerAttrsInPlace + 2 {
				o.Attributes = append(o.Attributes, owners.Attribute{Name: fmt.Sprintf("a%03d", i), Value: "v"})
			}
			return &o
		}
		o := owners.Owner{ID: fmt.Sprintf("o%d", r.IntN(3))}
		for _, n := range names[:r.IntN(3)+1] {
			if n != "id" {
				o.Attributes = append(o.Attributes, owners.Attribute{Name: n, Value: "v-" + n})
			}
		}
		o = o.Canonical()
		return &o
	}
	for round := range 2000 {
		in := pcommon.NewMap()
		for range r.IntN(10) {
			k := keys[r.IntN(len(keys))]
			if r.IntN(4) == 0 {
				in.PutInt(k, 1)
			} else {
				in.PutStr(k, "stale")
			}
		}
		owner := randomOwner()
		status := intervalstore.Status(r.IntN(4))
		reason := []string{"", "gap", reasonStatic}[r.IntN(3)]

		want := pcommon.NewMap()
		in.CopyTo(want)
		want.RemoveIf(func(k string, _ pcommon.Value) bool {
			return strings.HasPrefix(k, prefix) || k == flowschema.AttrPeerAttributionReason
		})
		if owner != nil {
			flowschema.PutOwner(want, prefix, *owner)
		}
		want.PutStr(flowschema.AttrPeerAttributionStatus, status.String())
		if reason != "" {
			want.PutStr(flowschema.AttrPeerAttributionReason, reason)
		}

		got := pcommon.NewMap()
		in.CopyTo(got)
		p.writeResult(got, status, owner, reason)
		if g, w := got.AsRaw(), want.AsRaw(); fmt.Sprint(g) != fmt.Sprint(w) || got.Len() != want.Len() {
			t.Fatalf("round %d: owner %+v status %v reason %q\nin   %v\ngot  %v\nwant %v", round, owner, status, reason, in.AsRaw(), g, w)
		}
	}
}

// TestWriteResultRepeatedKeys: received records can repeat a key (the Map
// API cannot make them, decoding can). None of the repeats survives under
// the prefix or as status or reason.
func TestWriteResultRepeatedKeys(t *testing.T) {
	const rec = `{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"attributes":[
		{"key":"flowattr.peer.owner.id","value":{"stringValue":"forged"}},
		{"key":"flowattr.peer.attribution.status","value":{"stringValue":"attributed"}},
		{"key":"flowattr.peer.owner.id","value":{"stringValue":"forged2"}},
		{"key":"flowattr.peer.owner.service.name","value":{"stringValue":"forged"}},
		{"key":"flowattr.peer.attribution.status","value":{"stringValue":"attributed"}},
		{"key":"flowattr.peer.owner.service.name","value":{"stringValue":"forged2"}},
		{"key":"flowattr.peer.attribution.reason","value":{"stringValue":"old"}},
		{"key":"flowattr.peer.attribution.reason","value":{"stringValue":"old2"}},
		{"key":"network.peer.address","value":{"stringValue":"10.0.0.1"}}]}]}]}]}`
	ld, err := (&plog.JSONUnmarshaler{}).UnmarshalLogs([]byte(rec))
	if err != nil {
		t.Fatal(err)
	}
	p := &ownershipProcessor{owners: flowschema.NewOwnerWriter(flowschema.PrefixPeerOwner)}
	for _, tc := range []struct {
		owner  *owners.Owner
		status intervalstore.Status
		reason string
		want   string
	}{
		{
			&owners.Owner{ID: "web", Attributes: []owners.Attribute{{Name: "service.name", Value: "web-svc"}}}, intervalstore.Attributed, "",
			"flowattr.peer.owner.id=web flowattr.peer.attribution.status=attributed flowattr.peer.owner.service.name=web-svc network.peer.address=10.0.0.1",
		},
		{
			nil, intervalstore.Unattributed, "gap",
			"flowattr.peer.attribution.status=unattributed flowattr.peer.attribution.reason=gap network.peer.address=10.0.0.1",
		},
	} {
		attrs := pcommon.NewMap()
		ld.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords().At(0).Attributes().CopyTo(attrs)
		if attrs.Len() != 9 {
			t.Fatalf("decoded %d attributes, want the 9 with repeats", attrs.Len())
		}
		p.writeResult(attrs, tc.status, tc.owner, tc.reason)
		var got []string
		for k, v := range attrs.All() {
			got = append(got, k+"="+v.AsString())
		}
		if g := strings.Join(got, " "); g != tc.want {
			t.Errorf("got  %s\nwant %s", g, tc.want)
		}
	}
}
