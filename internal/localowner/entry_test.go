package localowner

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// A flow names an owner known since its start on both clocks; one whose
// birth was not captured may be older than any change, and names only an
// owner known since before capture.
func TestHeldThroughout(t *testing.T) {
	clock, src, own := startOwnership(t, 0, "10.0.0.1", "a", "10.0.0.2", "c")
	rebuildAt(clock, src, 10, "10.0.0.1", "b", "10.0.0.2", "c")
	b, c := lookup(t, own, "10.0.0.1"), lookup(t, own, "10.0.0.2")

	assert.True(t, b.HeldThroughout(at(12), bootAt(12), true))
	assert.False(t, b.HeldThroughout(at(12), bootAt(12), false), "unknown start: may predate the change")
	assert.True(t, c.HeldThroughout(at(12), bootAt(12), false), "unknown start, owner known since before capture")

	assert.False(t, b.HeldThroughout(at(70), bootAt(9), true), "began before the change on the boot clock; the wall clock stepped")
	assert.False(t, b.HeldThroughout(at(9.5), bootAt(10.3), true), "began before the change on the wall clock, which claims are dated on")
}
