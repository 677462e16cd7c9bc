//go:build !linux

package ebpfflowreceiver // import "github.com/flowattr/flowattr/receiver/ebpfflowreceiver"

// openConntrack fails: connection tracking over netlink is Linux's.
func openConntrack() (natTable, error) { return nil, checkPlatform() }
