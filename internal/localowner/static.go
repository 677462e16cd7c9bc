package localowner // import "github.com/flowattr/flowattr/internal/localowner"

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/flowattr/flowattr/internal/owners"
)

// HostAddresses makes the host the owner of its own addresses in a
// StaticSource.
type HostAddresses struct {
	// Owner is the host as an owner.
	Owner owners.Owner
	// List lists the host's addresses, canonical (HostUnicastAddrs in
	// production).
	List func() ([]netip.Addr, error)
	// RefreshEvery is how often they are listed again once started.
	RefreshEvery time.Duration
}

// StaticSource is a fixed map plus, optionally, the host's own addresses.
// The host's addresses are listed again every HostAddresses.RefreshEvery:
// an address the host lost must stop being claimed for it, or the host
// would keep claiming it after it moved to someone else.
type StaticSource struct {
	configured map[netip.Prefix]owners.Owner
	host       *HostAddresses // nil when the host's addresses are not wanted
	logger     *zap.Logger

	mu        sync.RWMutex
	entries   map[netip.Prefix]owners.Owner
	hostAddrs []netip.Addr // sorted

	poll poller
}

// NewStaticSource returns the source of configured, canonical entries (as
// owners.ParseEntries returns them) and, when host is not nil, of the
// host's addresses, listed once here. Configured entries win over the
// host's addresses for the same prefix, as they are explicit.
func NewStaticSource(configured map[netip.Prefix]owners.Owner, host *HostAddresses, logger *zap.Logger) (*StaticSource, error) {
	s := &StaticSource{configured: configured, host: host, logger: logger}
	var addrs []netip.Addr
	if host != nil {
		var err error
		if addrs, err = host.List(); err != nil {
			return nil, fmt.Errorf("listing the host's addresses: %w", err)
		}
	}
	s.setHostAddrs(addrs)
	return s, nil
}

// Entries implements Source.
func (s *StaticSource) Entries() map[netip.Prefix]owners.Owner {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.entries
}

// Start implements Source: it lists the host's addresses again every
// HostAddresses.RefreshEvery.
func (s *StaticSource) Start(_ context.Context, onChange func()) error {
	if s.host != nil {
		s.poll.start(s.host.RefreshEvery, s.refreshHostAddrs, onChange)
	}
	return nil
}

// Shutdown implements Source.
func (s *StaticSource) Shutdown() error {
	s.poll.shutdown()
	return nil
}

// refreshHostAddrs lists the host's addresses again and reports whether the
// map changed. A failed listing keeps the previous addresses.
func (s *StaticSource) refreshHostAddrs() bool {
	addrs, err := s.host.List()
	if err != nil {
		s.logger.Warn("Cannot list the host's addresses; keeping the previous list", zap.Error(err))
		return false
	}
	return s.setHostAddrs(addrs)
}

// setHostAddrs rebuilds the map for addrs and reports whether they changed.
func (s *StaticSource) setHostAddrs(addrs []netip.Addr) bool {
	addrs = slices.Clone(addrs)
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.entries != nil && slices.Equal(addrs, s.hostAddrs) {
		return false
	}
	entries := make(map[netip.Prefix]owners.Owner, len(addrs)+len(s.configured))
	for _, a := range addrs {
		entries[netip.PrefixFrom(a, a.BitLen())] = s.host.Owner
	}
	maps.Copy(entries, s.configured)
	s.entries, s.hostAddrs = entries, addrs
	return true
}
