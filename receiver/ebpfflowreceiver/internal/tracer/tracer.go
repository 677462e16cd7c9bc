package tracer

import (
	"context"
	"fmt"
)

// Tracer holds the loaded BPF programs, their links and maps. Read, Active
// and Stats may be called concurrently; Close ends them.
type Tracer struct{}

// New validates opts, loads the BPF objects and attaches them. Its error
// wraps ErrUnsupported when the kernel or the privileges cannot run them.
func New(opts Options) (*Tracer, error) {
	return nil, fmt.Errorf("%w: implementation in progress", ErrUnsupported)
}

// Read delivers ring buffer records (KindClosed and KindFailed) to handle
// until ctx is done or the Tracer is closed; it then returns nil. handle runs
// on Read's goroutine and must not block long or retain the *Event, which is
// reused. One Read at a time.
func (t *Tracer) Read(ctx context.Context, handle func(*Event)) error {
	return ErrUnsupported
}

// Active runs one pass of the TCP socket iterator and calls handle with a
// KindActive Event for each established connection, with its current
// counters. Sockets that predate the tracer get a birth entry here (Start =
// now, StartKnown false) so their close is reported by Read.
func (t *Tracer) Active(ctx context.Context, handle func(*Event)) error {
	return ErrUnsupported
}

// Stats returns the loss counters and the ring buffer fill level.
func (t *Tracer) Stats() (Stats, error) {
	return Stats{}, ErrUnsupported
}

// Close detaches the programs and frees the maps; a blocked Read returns.
func (t *Tracer) Close() error {
	return nil
}
