//go:build !linux

package tracer

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"time"
)

// Tracer is the eBPF flow tracer. It needs Linux: on this system New always
// fails, so there is never a Tracer to call.
type Tracer struct{}

// New validates opts and fails with an error wrapping ErrUnsupported: the
// tracer works on Linux only.
func New(opts Options) (*Tracer, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%w: eBPF flow tracing works on Linux only, not on %s", ErrUnsupported, runtime.GOOS)
}

// The methods behave as those of a closed Tracer on Linux.

// Hooks reports that no programs are attached.
func (*Tracer) Hooks() Hooks { return Hooks{} }

// Read returns nil at once.
func (*Tracer) Read(context.Context, func(*Event)) error { return nil }

// Active returns os.ErrClosed.
func (*Tracer) Active(context.Context, func(*Event)) error { return os.ErrClosed }

// Stats returns os.ErrClosed.
func (*Tracer) Stats() (Stats, error) { return Stats{}, os.ErrClosed }

// Close does nothing.
func (*Tracer) Close() error { return nil }

// BootTime returns the largest Duration, a time after every event, as the
// Linux implementation does when it cannot read the boot clock.
func BootTime() time.Duration { return math.MaxInt64 }
