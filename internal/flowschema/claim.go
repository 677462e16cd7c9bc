package flowschema

import (
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/owners"
)

// Claim is the content of one claim record: Owner held Address during
// [Start, End], as sent by Sender.
type Claim struct {
	Address netip.Addr
	Owner   owners.Owner
	Start   time.Time
	End     time.Time
	Sender  string
}

// ParseAddr parses a textual IP address into its canonical form: IPv4-mapped
// IPv6 addresses are unmapped and zones dropped, so that one host never
// appears as two keys.
func ParseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	return CanonicalAddr(a), nil
}

// CanonicalAddr returns a with IPv4-mapped IPv6 unmapped and any zone dropped.
func CanonicalAddr(a netip.Addr) netip.Addr {
	return a.Unmap().WithZone("")
}

// PutOwner writes o into attrs as prefix+"id" and one prefix+name attribute per
// owner attribute.
func PutOwner(attrs pcommon.Map, prefix string, o owners.Owner) {
	attrs.PutStr(prefix+OwnerIDSuffix, o.ID)
	for _, a := range o.Attributes {
		attrs.PutStr(prefix+a.Name, a.Value)
	}
}

// ReadOwner reads the owner written under prefix by PutOwner. ok is false when
// there is no non-empty string ID attribute. The returned owner is canonical.
func ReadOwner(attrs pcommon.Map, prefix string) (o owners.Owner, ok bool) {
	idKey := ownerIDKey(prefix)
	var id pcommon.Value
	found := false
	// One pass: the first ID attribute counts, as for Map.Get.
	for k, v := range attrs.All() {
		if !strings.HasPrefix(k, prefix) || len(k) == len(prefix) {
			continue
		}
		if k == idKey {
			if !found {
				id, found = v, true
			}
			continue
		}
		o.Attributes = append(o.Attributes, owners.Attribute{Name: k[len(prefix):], Value: v.AsString()})
	}
	if !found || id.Type() != pcommon.ValueTypeStr || id.Str() == "" {
		return owners.Owner{}, false
	}
	o.ID = id.Str()
	return o.Canonical(), true
}

// OwnerReader reads owners as ReadOwner does, but returns an owner it has
// read before, without allocating, when a record's owner attributes are the
// same as that owner's: the records of one batch mostly share a few owners.
// It remembers up to ownerReaderSize owners by ID, each of at most
// maxRememberedOwnerSize bytes: what it keeps from past records stays
// bounded whatever they carry, as it reads owners before any limit on
// their size is checked. The zero value is ready. Owners it returns share
// their attributes with it: do not modify them.
type OwnerReader struct {
	prefix string
	byID   map[string]owners.Owner
}

const (
	ownerReaderSize = 256
	// maxRememberedOwnerSize bounds the ID, names and values of an owner
	// OwnerReader remembers, in bytes: owners are mostly well under 1 KiB,
	// and a larger one is read again each time.
	maxRememberedOwnerSize = 16 << 10
)

// Read returns ReadOwner(attrs, prefix).
func (r *OwnerReader) Read(attrs pcommon.Map, prefix string) (owners.Owner, bool) {
	if prefix != r.prefix || r.byID == nil {
		r.prefix, r.byID = prefix, make(map[string]owners.Owner)
	}
	if id, ok := attrs.Get(ownerIDKey(prefix)); ok && id.Type() == pcommon.ValueTypeStr {
		if o, ok := r.byID[id.Str()]; ok && r.same(attrs, o) {
			return o, true
		}
	}
	o, ok := ReadOwner(attrs, prefix)
	if ok && ownerSize(o) <= maxRememberedOwnerSize {
		if len(r.byID) >= ownerReaderSize {
			clear(r.byID)
		}
		r.byID[o.ID] = o
	}
	return o, ok
}

// ownerSize is the length of o's ID, names and values, in bytes.
func ownerSize(o owners.Owner) int {
	n := len(o.ID)
	for _, a := range o.Attributes {
		n += len(a.Name) + len(a.Value)
	}
	return n
}

// same reports whether the owner written in attrs under r.prefix is o: the
// first ID attribute is o's ID, and the other attributes under the prefix
// are string attributes matching o's one for one, each name once. A mask
// marks the names seen, so o may have at most 64 attributes; a larger owner
// is never the same, and is read by ReadOwner.
func (r *OwnerReader) same(attrs pcommon.Map, o owners.Owner) bool {
	if len(o.Attributes) > 64 {
		return false
	}
	idKey := ownerIDKey(r.prefix)
	idSeen := false
	var seen uint64
	for k, v := range attrs.All() {
		if !strings.HasPrefix(k, r.prefix) || len(k) == len(r.prefix) {
			continue
		}
		if v.Type() != pcommon.ValueTypeStr {
			return false
		}
		if k == idKey {
			if !idSeen && v.Str() != o.ID {
				return false
			}
			idSeen = true
			continue
		}
		i, found := slices.BinarySearchFunc(o.Attributes, k[len(r.prefix):], func(a owners.Attribute, name string) int {
			return strings.Compare(a.Name, name)
		})
		if !found || o.Attributes[i].Value != v.Str() || seen&(1<<i) != 0 {
			return false
		}
		seen |= 1 << i
	}
	return idSeen && bits.OnesCount64(seen) == len(o.Attributes)
}

// ownerIDKey returns prefix+OwnerIDSuffix, without building it for the
// schema's own prefixes.
func ownerIDKey(prefix string) string {
	switch prefix {
	case PrefixLocalOwner:
		return PrefixLocalOwner + OwnerIDSuffix
	case PrefixPeerOwner:
		return PrefixPeerOwner + OwnerIDSuffix
	case PrefixClaimOwner:
		return PrefixClaimOwner + OwnerIDSuffix
	}
	return prefix + OwnerIDSuffix
}

// PutClaim turns lr into the claim record for c. The record's Timestamp is
// the claim's end.
func PutClaim(lr plog.LogRecord, c Claim) {
	lr.SetEventName(EventClaim)
	lr.SetTimestamp(pcommon.NewTimestampFromTime(c.End))
	attrs := lr.Attributes()
	attrs.PutStr(AttrClaimAddress, CanonicalAddr(c.Address).String())
	attrs.PutInt(AttrClaimStartTime, c.Start.UnixNano())
	attrs.PutInt(AttrClaimEndTime, c.End.UnixNano())
	if c.Sender != "" {
		attrs.PutStr(AttrClaimSender, c.Sender)
	}
	PutOwner(attrs, PrefixClaimOwner, c.Owner)
}

// RejectReason says why a claim record was rejected. Its values are used as
// a telemetry attribute.
type RejectReason string

// Reasons for rejecting a claim record.
const (
	RejectMissingAddress RejectReason = "missing_address"
	RejectBadAddress     RejectReason = "bad_address"
	RejectMissingOwner   RejectReason = "missing_owner"
	RejectMissingTime    RejectReason = "missing_time"
	RejectEndBeforeStart RejectReason = "end_before_start"
)

// ClaimError is returned by ParseClaim for a record that is not a valid claim.
type ClaimError struct {
	Reason RejectReason
	Detail string
}

func (e *ClaimError) Error() string {
	return fmt.Sprintf("invalid claim (%s): %s", e.Reason, e.Detail)
}

// ReasonOf returns the RejectReason carried by err, or "" if err is not a
// *ClaimError.
func ReasonOf(err error) RejectReason {
	var ce *ClaimError
	if errors.As(err, &ce) {
		return ce.Reason
	}
	return ""
}

// IsClaim reports whether lr is a claim record.
func IsClaim(lr plog.LogRecord) bool { return lr.EventName() == EventClaim }

// ParseClaim reads the claim in a claim record. It checks the record's
// own consistency; whether the claim is plausible (not in the future, from a
// source allowed to claim the address) is the consumer's decision.
func ParseClaim(lr plog.LogRecord) (Claim, error) {
	attrs := lr.Attributes()
	var c Claim
	av, ok := attrs.Get(AttrClaimAddress)
	if !ok || av.Type() != pcommon.ValueTypeStr {
		return Claim{}, &ClaimError{RejectMissingAddress, "no string attribute " + AttrClaimAddress}
	}
	addr, err := ParseAddr(av.Str())
	if err != nil {
		return Claim{}, &ClaimError{RejectBadAddress, err.Error()}
	}
	c.Address = addr
	if c.Owner, ok = ReadOwner(attrs, PrefixClaimOwner); !ok {
		return Claim{}, &ClaimError{RejectMissingOwner, "no non-empty string attribute " + PrefixClaimOwner + OwnerIDSuffix}
	}
	start, ok := IntTime(attrs, AttrClaimStartTime)
	if !ok {
		return Claim{}, &ClaimError{RejectMissingTime, "no positive int attribute " + AttrClaimStartTime}
	}
	end, ok := IntTime(attrs, AttrClaimEndTime)
	if !ok {
		return Claim{}, &ClaimError{RejectMissingTime, "no positive int attribute " + AttrClaimEndTime}
	}
	if end.Before(start) {
		return Claim{}, &ClaimError{RejectEndBeforeStart, fmt.Sprintf("end %s before start %s", end.Format(time.RFC3339Nano), start.Format(time.RFC3339Nano))}
	}
	c.Start, c.End = start, end
	if sv, ok := attrs.Get(AttrClaimSender); ok {
		c.Sender = sv.AsString()
	}
	return c, nil
}

// IntTime reads a time stored as positive int Unix nanoseconds under key.
func IntTime(attrs pcommon.Map, key string) (time.Time, bool) {
	v, ok := attrs.Get(key)
	if !ok || v.Type() != pcommon.ValueTypeInt || v.Int() <= 0 {
		return time.Time{}, false
	}
	return time.Unix(0, v.Int()), true
}

// OwnerWriter writes owners under one prefix exactly as PutOwner does, but
// builds each attribute key once instead of once per record, for writers on
// a hot path. It is safe for concurrent use.
type OwnerWriter struct {
	prefix string
	idKey  string
	// keys is copied on write: owners have a handful of attribute names, so
	// a scan beats hashing and readers never lock.
	keys atomic.Pointer[[]ownerKey]
	mu   sync.Mutex // serialises writers of keys
}

type ownerKey struct{ name, key string }

// maxCachedOwnerKeys bounds the keys an OwnerWriter remembers: attribute
// names come from claims, which a misbehaving peer could vary endlessly.
const maxCachedOwnerKeys = 64

// NewOwnerWriter returns an OwnerWriter for prefix.
func NewOwnerWriter(prefix string) *OwnerWriter {
	return &OwnerWriter{prefix: prefix, idKey: prefix + OwnerIDSuffix}
}

// Put writes o into attrs like PutOwner(attrs, prefix, o).
func (w *OwnerWriter) Put(attrs pcommon.Map, o owners.Owner) {
	attrs.PutStr(w.idKey, o.ID)
	for _, a := range o.Attributes {
		attrs.PutStr(w.Key(a.Name), a.Value)
	}
}

// Prefix returns the prefix the writer writes under.
func (w *OwnerWriter) Prefix() string { return w.prefix }

// IDKey returns the attribute key of the owner's ID: prefix+"id".
func (w *OwnerWriter) IDKey() string { return w.idKey }

// Key returns the attribute key of the owner attribute name: prefix+name,
// built once for the names seen most.
func (w *OwnerWriter) Key(name string) string {
	if keys := w.keys.Load(); keys != nil {
		for _, k := range *keys {
			if k.name == name {
				return k.key
			}
		}
	}
	key := w.prefix + name
	w.mu.Lock()
	defer w.mu.Unlock()
	var keys []ownerKey
	if cur := w.keys.Load(); cur != nil {
		keys = *cur
	}
	if len(keys) < maxCachedOwnerKeys && !slices.ContainsFunc(keys, func(k ownerKey) bool { return k.name == name }) {
		next := append(slices.Clip(keys), ownerKey{name: name, key: key})
		w.keys.Store(&next)
	}
	return key
}
