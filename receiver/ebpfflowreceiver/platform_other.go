//go:build !linux

package ebpfflowreceiver // import "github.com/flowattr/flowattr/receiver/ebpfflowreceiver"

import (
	"fmt"
	"runtime"
	"syscall"

	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/metadata"
)

// checkPlatform fails: the receiver traces TCP connections with eBPF, which
// it can do on Linux only.
func checkPlatform() error {
	return fmt.Errorf("the %s receiver works on Linux only: it traces TCP connections with eBPF, and this collector runs on %s",
		metadata.Type, runtime.GOOS)
}

func ownNetnsInode() (uint32, error) {
	return 0, checkPlatform()
}

// errnoName returns "": the error numbers of events are Linux's, which this
// system does not name.
func errnoName(syscall.Errno) string { return "" }
