package flowschema

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/owners"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func TestClaimRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   Claim
		addr string // canonical address expected back
	}{
		{"ipv4", Claim{Address: netip.MustParseAddr("10.0.0.2"), Owner: owners.Owner{ID: "checkout"}, Start: t0, End: t0.Add(time.Minute), Sender: "node-a"}, "10.0.0.2"},
		{"ipv6 with attributes", Claim{
			Address: netip.MustParseAddr("fd00::2"),
			Owner: owners.Owner{ID: "pod-1", Attributes: []owners.Attribute{
				{Name: "service.name", Value: "cart"}, {Name: "k8s.namespace.name", Value: "shop"},
			}},
			Start: t0, End: t0,
		}, "fd00::2"},
		{"mapped ipv4 is unmapped", Claim{Address: netip.MustParseAddr("::ffff:10.0.0.3"), Owner: owners.Owner{ID: "x"}, Start: t0, End: t0.Add(time.Nanosecond)}, "10.0.0.3"},
		{"zone dropped", Claim{Address: netip.MustParseAddr("fe80::1%eth0"), Owner: owners.Owner{ID: "x"}, Start: t0, End: t0.Add(time.Second)}, "fe80::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lr := plog.NewLogRecord()
			PutClaim(lr, tt.in)
			assert.True(t, IsClaim(lr))
			assert.Equal(t, tt.in.End, lr.Timestamp().AsTime().UTC())
			got, err := ParseClaim(lr)
			require.NoError(t, err)
			assert.Equal(t, netip.MustParseAddr(tt.addr), got.Address)
			assert.True(t, tt.in.Owner.Canonical().Equal(got.Owner), "owner %v != %v", tt.in.Owner, got.Owner)
			assert.True(t, tt.in.Start.Equal(got.Start))
			assert.True(t, tt.in.End.Equal(got.End))
			assert.Equal(t, tt.in.Sender, got.Sender)

			// Writing the parsed claim again gives the same record.
			again := plog.NewLogRecord()
			PutClaim(again, got)
			assert.Equal(t, lr.Attributes().AsRaw(), again.Attributes().AsRaw())
		})
	}
}

func TestParseClaimRejects(t *testing.T) {
	valid := func() plog.LogRecord {
		lr := plog.NewLogRecord()
		PutClaim(lr, Claim{Address: netip.MustParseAddr("10.0.0.2"), Owner: owners.Owner{ID: "a"}, Start: t0, End: t0.Add(time.Minute)})
		return lr
	}
	tests := []struct {
		name   string
		edit   func(pcommon.Map)
		reason RejectReason
	}{
		{"no address", func(m pcommon.Map) { m.Remove(AttrClaimAddress) }, RejectMissingAddress},
		{"address not a string", func(m pcommon.Map) { m.PutInt(AttrClaimAddress, 10) }, RejectMissingAddress},
		{"bad address", func(m pcommon.Map) { m.PutStr(AttrClaimAddress, "10.0.0.256") }, RejectBadAddress},
		{"no owner", func(m pcommon.Map) { m.Remove(PrefixClaimOwner + OwnerIDSuffix) }, RejectMissingOwner},
		{"empty owner", func(m pcommon.Map) { m.PutStr(PrefixClaimOwner+OwnerIDSuffix, "") }, RejectMissingOwner},
		{"no start", func(m pcommon.Map) { m.Remove(AttrClaimStartTime) }, RejectMissingTime},
		{"start not an int", func(m pcommon.Map) { m.PutDouble(AttrClaimStartTime, 1) }, RejectMissingTime},
		{"end not positive", func(m pcommon.Map) { m.PutInt(AttrClaimEndTime, 0) }, RejectMissingTime},
		{"end before start", func(m pcommon.Map) { m.PutInt(AttrClaimEndTime, t0.Add(-time.Nanosecond).UnixNano()) }, RejectEndBeforeStart},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lr := valid()
			tt.edit(lr.Attributes())
			_, err := ParseClaim(lr)
			require.Error(t, err)
			assert.Equal(t, tt.reason, ReasonOf(err))
			assert.Contains(t, err.Error(), string(tt.reason))
		})
	}
	assert.Equal(t, RejectReason(""), ReasonOf(assert.AnError))
}

func TestOwnerRoundTripAndWriter(t *testing.T) {
	o := owners.Owner{ID: "pod-1", Attributes: []owners.Attribute{
		{Name: "service.name", Value: "cart"}, {Name: "k8s.pod.name", Value: "cart-7"},
	}}
	viaPut := pcommon.NewMap()
	viaPut.PutStr("unrelated", "kept")
	PutOwner(viaPut, PrefixPeerOwner, o)
	got, ok := ReadOwner(viaPut, PrefixPeerOwner)
	require.True(t, ok)
	assert.True(t, o.Canonical().Equal(got))

	w := NewOwnerWriter(PrefixPeerOwner)
	for range 2 { // the second pass uses the cached keys
		viaWriter := pcommon.NewMap()
		viaWriter.PutStr("unrelated", "kept")
		w.Put(viaWriter, o)
		assert.Equal(t, viaPut.AsRaw(), viaWriter.AsRaw())
	}

	_, ok = ReadOwner(pcommon.NewMap(), PrefixPeerOwner)
	assert.False(t, ok)
}

func TestOwnerWriterBoundsItsCache(t *testing.T) {
	w := NewOwnerWriter("p.")
	for i := range maxCachedOwnerKeys + 10 {
		m := pcommon.NewMap()
		name := string(binary.BigEndian.AppendUint32(nil, uint32(i)))
		w.Put(m, owners.Owner{ID: "x", Attributes: []owners.Attribute{{Name: name, Value: "v"}}})
		v, ok := m.Get("p." + name)
		require.True(t, ok)
		require.Equal(t, "v", v.Str())
	}
	assert.Len(t, *w.keys.Load(), maxCachedOwnerKeys)
}

var fuzzKeys = []string{AttrClaimAddress, AttrClaimStartTime, AttrClaimEndTime, AttrClaimSender, PrefixClaimOwner + OwnerIDSuffix, PrefixClaimOwner + "service.name"}

// FuzzParseClaim gives the claim attributes arbitrary types and values:
// ParseClaim never panics, and a claim it accepts is usable as it is.
func FuzzParseClaim(f *testing.F) {
	f.Add([]byte{1, 0, 2, 3, 4, 5}, "10.0.0.2", int64(1), int64(2))
	f.Add([]byte{1, 2, 2, 1, 1, 1}, "::ffff:10.0.0.2", int64(5), int64(5))
	f.Add([]byte{1, 2, 2, 1, 1, 1}, "fe80::1%eth0", int64(9), int64(3))
	f.Add([]byte{0, 3, 4, 5, 6, 7}, "", int64(-1), int64(0))
	f.Fuzz(func(t *testing.T, types []byte, s string, a, b int64) {
		lr := plog.NewLogRecord()
		attrs := lr.Attributes()
		for i, k := range fuzzKeys {
			var ty byte
			if i < len(types) {
				ty = types[i]
			}
			switch ty % 7 {
			case 0:
			case 1:
				attrs.PutStr(k, s)
			case 2:
				attrs.PutInt(k, a)
			case 3:
				attrs.PutInt(k, b)
			case 4:
				attrs.PutDouble(k, float64(a))
			case 5:
				attrs.PutEmptyMap(k).PutStr(s, s)
			case 6:
				attrs.PutEmptyBytes(k).FromRaw([]byte(s))
			}
		}
		c, err := ParseClaim(lr)
		if err != nil {
			require.NotEmpty(t, ReasonOf(err))
			return
		}
		require.True(t, c.Address.IsValid())
		require.False(t, c.Address.Is4In6(), "canonical addresses are unmapped")
		require.Empty(t, c.Address.Zone())
		require.False(t, c.End.Before(c.Start))
		require.NotEmpty(t, c.Owner.ID)
	})
}

func TestReadOwnerCases(t *testing.T) {
	for _, prefix := range []string{PrefixLocalOwner, PrefixPeerOwner, PrefixClaimOwner, "custom."} {
		m := pcommon.NewMap()
		m.PutStr(prefix, "the bare prefix is no attribute")
		m.PutStr(prefix+"zone", "b")
		m.PutInt(prefix+"rank", 3)
		m.PutStr("other.id", "not under the prefix")
		_, ok := ReadOwner(m, prefix)
		assert.False(t, ok, "%s: no ID", prefix)

		m.PutInt(prefix+OwnerIDSuffix, 7)
		_, ok = ReadOwner(m, prefix)
		assert.False(t, ok, "%s: ID not a string", prefix)

		m.PutStr(prefix+OwnerIDSuffix, "")
		_, ok = ReadOwner(m, prefix)
		assert.False(t, ok, "%s: empty ID", prefix)

		m.PutStr(prefix+OwnerIDSuffix, "w")
		got, ok := ReadOwner(m, prefix)
		require.True(t, ok, prefix)
		assert.Equal(t, owners.Owner{ID: "w", Attributes: []owners.Attribute{
			{Name: "rank", Value: "3"}, {Name: "zone", Value: "b"},
		}}, got, prefix)
	}
}

// TestOwnerReaderMatchesReadOwner reads random sequences of owners, drawn
// from a small vocabulary so that many repeat one read before, with an
// OwnerReader and with ReadOwner: the answers must be equal.
func TestOwnerReaderMatchesReadOwner(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	prefixes := []string{PrefixLocalOwner, PrefixPeerOwner}
	names := []string{"service.name", "k8s.namespace.name", "k8s.pod.name", ""}
	values := []string{"a", "b", ""}
	var reader OwnerReader
	hits := 0
	prev, prevPrefix := pcommon.NewMap(), prefixes[0]
	for i := range 5000 {
		attrs := pcommon.NewMap()
		if r.IntN(2) == 0 {
			// The record before again, or with one attribute changed.
			prev.CopyTo(attrs)
			if r.IntN(3) == 0 {
				attrs.PutStr(prevPrefix+names[r.IntN(len(names))], values[r.IntN(len(values))])
			}
			checkOwnerReader(t, &reader, attrs, prevPrefix, &hits, i)
			continue
		}
		for range r.IntN(4) {
			p, n := prefixes[r.IntN(len(prefixes))], names[r.IntN(len(names))]
			switch r.IntN(10) {
			case 0:
				attrs.PutInt(p+n, 7)
			case 1:
				attrs.PutStr(p+OwnerIDSuffix, values[r.IntN(len(values))])
			default:
				attrs.PutStr(p+n, values[r.IntN(len(values))])
			}
		}
		if r.IntN(5) > 0 {
			attrs.PutStr(PrefixLocalOwner+OwnerIDSuffix, values[r.IntN(2)])
		}
		attrs.PutStr("network.peer.address", "10.0.0.1")
		prefix := prefixes[r.IntN(len(prefixes))]
		checkOwnerReader(t, &reader, attrs, prefix, &hits, i)
		attrs.CopyTo(prev)
		prevPrefix = prefix
	}
	if hits < 500 {
		t.Fatalf("only %d reads of 5000 hit the last owner: the test does not exercise the fast path", hits)
	}
}

func checkOwnerReader(t *testing.T, reader *OwnerReader, attrs pcommon.Map, prefix string, hits *int, i int) {
	t.Helper()
	want, wantOK := ReadOwner(attrs, prefix)
	if reader.prefix == prefix {
		reader.Start(prefix)
		for k, v := range attrs.All() {
			reader.See(k, v)
		}
		if o, ok := reader.byID[reader.id.Str()]; ok && reader.hasID && reader.id.Type() == pcommon.ValueTypeStr && !reader.overflow && reader.same(o) {
			*hits++
		}
	}
	got, gotOK := reader.Read(attrs, prefix)
	if gotOK != wantOK || !got.Equal(want) {
		t.Fatalf("read %d of %v under %q: got %v/%v, ReadOwner %v/%v", i, attrs.AsRaw(), prefix, got, gotOK, want, wantOK)
	}
}

// TestOwnerReaderRepeatedKeys: decoded records can repeat a key (the Map API
// cannot make them). An owner read before is returned only for a record
// carrying exactly its attributes, so that a repeated name never stands in
// for a missing one; a hit does not allocate.
func TestOwnerReaderRepeatedKeys(t *testing.T) {
	const recs = `{"resourceLogs":[{"scopeLogs":[{"logRecords":[
		{"attributes":[
			{"key":"flowattr.local.owner.id","value":{"stringValue":"w"}},
			{"key":"flowattr.local.owner.service.name","value":{"stringValue":"a"}},
			{"key":"flowattr.local.owner.zone","value":{"stringValue":"b"}}]},
		{"attributes":[
			{"key":"flowattr.local.owner.id","value":{"stringValue":"w"}},
			{"key":"flowattr.local.owner.service.name","value":{"stringValue":"a"}},
			{"key":"flowattr.local.owner.service.name","value":{"stringValue":"a"}}]},
		{"attributes":[
			{"key":"flowattr.local.owner.id","value":{"stringValue":"w"}},
			{"key":"flowattr.local.owner.zone","value":{"stringValue":"b"}},
			{"key":"flowattr.local.owner.zone","value":{"stringValue":"b"}}]},
		{"attributes":[
			{"key":"flowattr.local.owner.id","value":{"stringValue":"w"}},
			{"key":"flowattr.local.owner.service.name","value":{"stringValue":"a"}},
			{"key":"flowattr.local.owner.zone","value":{"stringValue":"b"}},
			{"key":"flowattr.local.owner.service.name","value":{"stringValue":"a"}}]},
		{"attributes":[
			{"key":"flowattr.local.owner.id","value":{"stringValue":"w"}},
			{"key":"flowattr.local.owner.service.name","value":{"stringValue":"a"}},
			{"key":"flowattr.local.owner.zone","value":{"stringValue":"b"}},
			{"key":"flowattr.local.owner.service.name","value":{"stringValue":"c"}}]}
	]}]}]}`
	ld, err := (&plog.JSONUnmarshaler{}).UnmarshalLogs([]byte(recs))
	require.NoError(t, err)
	lrs := ld.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords()
	require.Equal(t, 5, lrs.Len())
	var reader OwnerReader
	hits := 0
	for i := range lrs.Len() {
		// Each record after the first owner, with that owner cached.
		checkOwnerReader(t, &reader, lrs.At(0).Attributes(), PrefixLocalOwner, &hits, 0)
		checkOwnerReader(t, &reader, lrs.At(i).Attributes(), PrefixLocalOwner, &hits, i)
	}
	require.NotZero(t, hits, "no read hit the cached owner")
	attrs := lrs.At(0).Attributes()
	reader.Read(attrs, PrefixLocalOwner)
	assert.Zero(t, testing.AllocsPerRun(100, func() { reader.Read(attrs, PrefixLocalOwner) }))
}

// An OwnerReader does not keep a large owner: it reads it again each time,
// so that what it holds from past records stays bounded.
func TestOwnerReaderForgetsLargeOwners(t *testing.T) {
	var reader OwnerReader
	small, large := pcommon.NewMap(), pcommon.NewMap()
	PutOwner(small, PrefixLocalOwner, owners.Owner{ID: "small", Attributes: []owners.Attribute{{Name: "service.name", Value: "web"}}})
	PutOwner(large, PrefixLocalOwner, owners.Owner{ID: "large", Attributes: []owners.Attribute{{Name: "service.name", Value: strings.Repeat("x", maxRememberedOwnerSize)}}})
	for range 2 {
		for _, attrs := range []pcommon.Map{small, large} {
			want, _ := ReadOwner(attrs, PrefixLocalOwner)
			got, ok := reader.Read(attrs, PrefixLocalOwner)
			require.True(t, ok)
			require.True(t, got.Equal(want))
		}
	}
	assert.Contains(t, reader.byID, "small")
	assert.NotContains(t, reader.byID, "large")
}

// An owner with more attributes than OwnerReader compares with one it
// remembers is read in full each time, and equals ReadOwner's; one that
// differs from it in a single attribute is told apart.
func TestOwnerReaderManyAttributes(t *testing.T) {
	var reader OwnerReader
	many := owners.Owner{ID: "many"}
	for i := range maxScannedFields + 6 {
		many.Attributes = append(many.Attributes, owners.Attribute{Name: fmt.Sprintf("a%03d", i), Value: "v"})
	}
	attrs := pcommon.NewMap()
	PutOwner(attrs, PrefixLocalOwner, many)
	for range 2 {
		got, ok := reader.Read(attrs, PrefixLocalOwner)
		require.True(t, ok)
		require.True(t, got.Equal(many.Canonical()), "got %v", got)
	}
	attrs.PutStr(PrefixLocalOwner+"a000", "w")
	want, _ := ReadOwner(attrs, PrefixLocalOwner)
	got, ok := reader.Read(attrs, PrefixLocalOwner)
	require.True(t, ok)
	require.True(t, got.Equal(want), "got %v, want %v", got, want)
	require.False(t, got.Equal(many.Canonical()))
}
