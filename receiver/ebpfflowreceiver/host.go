package ebpfflowreceiver // import "github.com/flowattr/flowattr/receiver/ebpfflowreceiver"

import (
	"fmt"
	"os"
	"strings"

	"github.com/flowattr/flowattr/internal/owners"
)

// machineIDPath is systemd's stable host ID, also used by the resource
// detection processor for host.id.
const machineIDPath = "/etc/machine-id"

// hostIdentity is who this host is, for resource attributes and as the owner
// of its own addresses.
type hostIdentity struct {
	name string // host.name
	id   string // host.id; empty when unknown
}

func readHostIdentity(machineIDFile string) (hostIdentity, error) {
	name, err := os.Hostname()
	if err != nil {
		return hostIdentity{}, fmt.Errorf("reading the host name: %w", err)
	}
	h := hostIdentity{name: name}
	// A missing machine ID (minimal containers) only loses host.id.
	if b, err := os.ReadFile(machineIDFile); err == nil {
		h.id = strings.TrimSpace(string(b))
	}
	return h, nil
}

// owner is the host as the owner of its own addresses: ID the host name.
func (h hostIdentity) owner() owners.Owner {
	o := owners.Owner{ID: h.name, Attributes: []owners.Attribute{{Name: "host.name", Value: h.name}}}
	if h.id != "" {
		o.Attributes = append(o.Attributes, owners.Attribute{Name: "host.id", Value: h.id})
	}
	return o.Canonical()
}
