package intervalstore

import (
	"errors"
	"fmt"
	"time"
)

// Config configures a Store.
type Config struct {
	// MergeGap joins claims of the same owner whose gap is at most MergeGap
	// into one range. 0 joins only overlapping or touching claims.
	MergeGap time.Duration
	// ClockSkew is the largest clock difference between the hosts whose
	// claims and lookups meet here. A lookup is attributed only when one
	// owner covers all of [t-ClockSkew, t+ClockSkew]: it is Uncertain when
	// another owner's coverage lies in there, and Unattributed
	// (ReasonNearUnclaimedEdge) when part of it is covered by no claim yet.
	// 0 disables it.
	ClockSkew time.Duration
	// Retention is how much history is kept; must be > 0.
	Retention time.Duration
	// MaxKeys bounds the number of keys; must be > 0. Beyond it, the key least
	// recently given a claim is evicted.
	MaxKeys int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Validate reports whether c is usable.
func (c Config) Validate() error {
	var errs []error
	if c.MergeGap < 0 {
		errs = append(errs, fmt.Errorf("intervalstore: MergeGap must be >= 0, got %v", c.MergeGap))
	}
	if c.ClockSkew < 0 {
		errs = append(errs, fmt.Errorf("intervalstore: ClockSkew must be >= 0, got %v", c.ClockSkew))
	}
	if c.Retention <= 0 {
		errs = append(errs, fmt.Errorf("intervalstore: Retention must be > 0, got %v", c.Retention))
	}
	if c.MaxKeys <= 0 {
		errs = append(errs, fmt.Errorf("intervalstore: MaxKeys must be > 0, got %d", c.MaxKeys))
	}
	return errors.Join(errs...)
}

// Errors returned by Apply.
var (
	ErrEndBeforeStart = errors.New("intervalstore: claim ends before it starts")
	ErrEmptyOwner     = errors.New("intervalstore: claim has an empty owner ID")
	ErrExpired        = errors.New("intervalstore: claim ends before the retention horizon")
)
