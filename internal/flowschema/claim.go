package flowschema

import (
	"errors"
	"fmt"
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
//
// Read makes one pass over a record's attributes. A caller that passes
// over them for attributes of its own reads the owner in the same pass:
// Start, then See for each attribute, then Finish.
type OwnerReader struct {
	prefix string
	byID   map[string]owners.Owner

	// What See found under prefix since Start: the first ID attribute,
	// and the other attributes, at most maxScannedFields of them.
	id       pcommon.Value
	hasID    bool
	fields   []scannedField
	overflow bool // more than maxScannedFields: Finish reads them again
	nonStr   bool // a value that is not a string: no remembered owner is the same
}

type scannedField struct {
	name string // the key without the prefix
	v    pcommon.Value
}

const (
	ownerReaderSize = 256
	// maxRememberedOwnerSize bounds the ID, names and values of an owner
	// OwnerReader remembers, in bytes: owners are mostly well under 1 KiB,
	// and a larger one is read again each time.
	maxRememberedOwnerSize = 16 << 10
	// maxScannedFields bounds the attributes See keeps, and so the owners
	// that can be the same as one remembered (a mask marks the names
	// seen): a larger owner is read by ReadOwner.
	maxScannedFields = 64
)

// Read returns ReadOwner(attrs, prefix).
func (r *OwnerReader) Read(attrs pcommon.Map, prefix string) (owners.Owner, bool) {
	r.Start(prefix)
	for k, v := range attrs.All() {
		r.See(k, v)
	}
	return r.Finish(attrs)
}

// Start begins reading the owner under prefix of one record.
func (r *OwnerReader) Start(prefix string) {
	if prefix != r.prefix || r.byID == nil {
		r.prefix, r.byID = prefix, make(map[string]owners.Owner)
	}
	clear(r.fields)
	r.id, r.hasID, r.fields, r.overflow, r.nonStr = pcommon.Value{}, false, r.fields[:0], false, false
}

// See looks at one attribute of the record, in the record's order.
func (r *OwnerReader) See(k string, v pcommon.Value) {
	if len(k) <= len(r.prefix) || !HasKeyPrefix(k, r.prefix) {
		return
	}
	if v.Type() != pcommon.ValueTypeStr {
		r.nonStr = true
	}
	if k[len(r.prefix):] == OwnerIDSuffix {
		// The first ID attribute counts, as for Map.Get.
		if !r.hasID {
			r.id, r.hasID = v, true
		}
		return
	}
	if len(r.fields) == maxScannedFields {
		r.overflow = true
		return
	}
	r.fields = append(r.fields, scannedField{name: k[len(r.prefix):], v: v})
}

// Finish returns the owner of the record whose attributes, attrs, See saw
// since Start: ReadOwner(attrs, prefix).
func (r *OwnerReader) Finish(attrs pcommon.Map) (owners.Owner, bool) {
	if !r.hasID || r.id.Type() != pcommon.ValueTypeStr || r.id.Str() == "" {
		return owners.Owner{}, false
	}
	if r.overflow {
		o, ok := ReadOwner(attrs, r.prefix)
		if ok {
			r.remember(o)
		}
		return o, ok
	}
	if o, ok := r.byID[r.id.Str()]; ok && r.same(o) {
		return o, true
	}
	o := owners.Owner{ID: r.id.Str()}
	for _, f := range r.fields {
		o.Attributes = append(o.Attributes, owners.Attribute{Name: f.name, Value: f.v.AsString()})
	}
	o = o.Canonical()
	r.remember(o)
	return o, true
}

// remember keeps o for the records after, unless it is too large.
func (r *OwnerReader) remember(o owners.Owner) {
	if ownerSize(o) > maxRememberedOwnerSize {
		return
	}
	if len(r.byID) >= ownerReaderSize {
		clear(r.byID)
	}
	r.byID[o.ID] = o
}

// ownerSize is the length of o's ID, names and values, in bytes.
func ownerSize(o owners.Owner) int {
	n := len(o.ID)
	for _, a := range o.Attributes {
		n += len(a.Name) + len(a.Value)
	}
	return n
}

// same reports whether the owner See saw is o, whose ID is the one seen:
// every attribute under the prefix is a string, and those other than the
// ID match o's attributes one for one, each name once.
func (r *OwnerReader) same(o owners.Owner) bool {
	if r.nonStr || len(r.fields) != len(o.Attributes) {
		return false
	}
	var seen uint64
	for _, f := range r.fields {
		i, found := slices.BinarySearchFunc(o.Attributes, f.name, func(a owners.Attribute, name string) int {
			return strings.Compare(a.Name, name)
		})
		if !found || o.Attributes[i].Value != f.v.Str() || seen&(1<<i) != 0 {
			return false
		}
		seen |= 1 << i
	}
	return true
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
