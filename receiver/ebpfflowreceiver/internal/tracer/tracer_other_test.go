//go:build !linux

package tracer

import (
	"errors"
	"strings"
	"testing"
)

func TestNewIsLinuxOnly(t *testing.T) {
	_, err := New(Options{})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "Linux only") {
		t.Fatalf("New on a system other than Linux: got %v, want ErrUnsupported saying Linux only", err)
	}
}
