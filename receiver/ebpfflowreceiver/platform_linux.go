package ebpfflowreceiver // import "github.com/flowattr/flowattr/receiver/ebpfflowreceiver"

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// checkPlatform reports whether the receiver can run on this system: on
// Linux it can (whether the kernel and the privileges suffice is for Start
// to find out).
func checkPlatform() error { return nil }

// netnsPath is this process's network namespace; its inode is what the
// tracer reports as an event's NetnsInode.
const netnsPath = "/proc/self/ns/net"

func ownNetnsInode() (uint32, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(netnsPath, &st); err != nil {
		return 0, fmt.Errorf("reading this process's network namespace: %w", err)
	}
	return uint32(st.Ino), nil
}

// errnoName returns the name of a Linux error number, such as
// "ECONNREFUSED", or "" when it has none.
func errnoName(e syscall.Errno) string { return unix.ErrnoName(e) }
