package owners

import (
	"errors"
	"fmt"
	"strconv"
)

// Limits bound the size of an owner. An owner's attributes are copied onto
// every flow record attributed to it, so one oversized owner (a claim whose
// attribute value is a megabyte) would cost that much on every flow of its
// address. The ownership processor rejects a claim whose owner exceeds them
// (reason owner_too_large), and the receiver refuses such an owner from its
// ownership sources. Lengths are in bytes.
type Limits struct {
	// MaxIDLength bounds the owner's ID.
	MaxIDLength int `mapstructure:"max_id_length"`
	// MaxAttributes bounds the number of attributes, 0 for owners that
	// are their ID alone.
	MaxAttributes int `mapstructure:"max_attributes"`
	// MaxNameLength bounds each attribute's name.
	MaxNameLength int `mapstructure:"max_name_length"`
	// MaxValueLength bounds each attribute's value.
	MaxValueLength int `mapstructure:"max_value_length"`
}

// DefaultLimits returns the limits of a default configuration. They leave
// room for every owner flowattr knows of and bound an owner to about 40 KiB
// (256 + 32 × (256 + 1024) bytes):
//
//   - ID 256: an owner ID is a stable key, such as a Kubernetes UID (36
//     bytes), a host name (at most 64 on Linux, 253 as a DNS name) or a
//     service or pool name.
//   - 32 attributes: owners carry a handful (service.name,
//     k8s.namespace.name, k8s.pod.name, a few labels).
//   - names 256: semantic-convention names are under 64 bytes; a label
//     turned into an attribute (k8s.pod.label.app.kubernetes.io/name) under
//     100.
//   - values 1024: Kubernetes names are at most 253 bytes and label values
//     63; an image reference with its digest is about 200.
func DefaultLimits() Limits {
	return Limits{MaxIDLength: 256, MaxAttributes: 32, MaxNameLength: 256, MaxValueLength: 1024}
}

// Validate checks the limits; its errors name each setting under field,
// for example "owner_limits.max_id_length: must be positive, got 0".
func (l Limits) Validate(field string) error {
	var errs []error
	positive := func(name string, v int) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s.%s: must be positive, got %d", field, name, v))
		}
	}
	positive("max_id_length", l.MaxIDLength)
	positive("max_name_length", l.MaxNameLength)
	positive("max_value_length", l.MaxValueLength)
	if l.MaxAttributes < 0 {
		errs = append(errs, fmt.Errorf("%s.max_attributes: must not be negative, got %d (0 allows owners with an ID only)", field, l.MaxAttributes))
	}
	return errors.Join(errs...)
}

// Check reports whether o is within l, or which limit it exceeds first,
// in the shape of Entry.Owner's errors: "id: ...", "attributes: ...".
// o's attributes are checked in their order, canonical for a canonical
// owner, so the error does not vary between calls.
func (l Limits) Check(o Owner) error {
	if len(o.ID) > l.MaxIDLength {
		return fmt.Errorf("id: %s is %d bytes, more than max_id_length (%d)", clip(o.ID), len(o.ID), l.MaxIDLength)
	}
	if len(o.Attributes) > l.MaxAttributes {
		return fmt.Errorf("attributes: %d attributes, more than max_attributes (%d)", len(o.Attributes), l.MaxAttributes)
	}
	for _, a := range o.Attributes {
		if len(a.Name) > l.MaxNameLength {
			return fmt.Errorf("attributes: name %s is %d bytes, more than max_name_length (%d)", clip(a.Name), len(a.Name), l.MaxNameLength)
		}
		if len(a.Value) > l.MaxValueLength {
			return fmt.Errorf("attributes: %s: value is %d bytes, more than max_value_length (%d)", clip(a.Name), len(a.Value), l.MaxValueLength)
		}
	}
	return nil
}

// clipLength is how much of an oversized string an error quotes.
const clipLength = 40

// clip quotes s for an error, cut to clipLength bytes: an error must not
// repeat the megabyte it refuses.
func clip(s string) string {
	if len(s) <= clipLength {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:clipLength]) + "..."
}
