package ebpfflowreceiver // import "github.com/flowattr/flowattr/receiver/ebpfflowreceiver"

import (
	"errors"

	"github.com/gaissmai/bart"

	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/tracer"
)

// flowFilter decides which flow events become records. It is immutable after
// construction and safe for concurrent use.
type flowFilter struct {
	excludeLoopback bool
	exclude         bart.Lite
	include         bart.Lite
	hasInclude      bool
	excludePorts    map[uint16]struct{}
	// netns, when not zero, is the only network namespace inode kept.
	netns uint32
}

// newFlowFilter builds the filter; ownNetns is the inode of the collector's
// network namespace, used when cfg.OwnNetnsOnly is set.
func newFlowFilter(cfg FilterConfig, ownNetns uint32) (*flowFilter, error) {
	f := &flowFilter{excludeLoopback: cfg.ExcludeLoopback, excludePorts: map[uint16]struct{}{}}
	if cfg.OwnNetnsOnly {
		if ownNetns == 0 {
			return nil, errors.New("filter.own_netns_only: the collector's network namespace is unknown")
		}
		f.netns = ownNetns
	}
	for _, s := range cfg.ExcludeCIDRs {
		p, err := owners.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		f.exclude.Insert(p)
	}
	for _, s := range cfg.IncludeCIDRs {
		p, err := owners.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		f.include.Insert(p)
		f.hasInclude = true
	}
	for _, p := range cfg.ExcludePorts {
		f.excludePorts[uint16(p)] = struct{}{}
	}
	return f, nil
}

// keep reports whether ev passes the filter.
func (f *flowFilter) keep(ev *tracer.Event) bool {
	if f.netns != 0 && ev.NetnsInode != f.netns {
		return false
	}
	if f.excludeLoopback && (ev.LocalAddr.IsLoopback() || ev.PeerAddr.IsLoopback()) {
		return false
	}
	if f.exclude.Contains(ev.LocalAddr) || f.exclude.Contains(ev.PeerAddr) {
		return false
	}
	if len(f.excludePorts) > 0 {
		switch ev.Role {
		case tracer.RoleClient:
			if _, ok := f.excludePorts[ev.PeerPort]; ok {
				return false
			}
		case tracer.RoleServer:
			if _, ok := f.excludePorts[ev.LocalPort]; ok {
				return false
			}
		default:
			_, local := f.excludePorts[ev.LocalPort]
			_, peer := f.excludePorts[ev.PeerPort]
			if local || peer {
				return false
			}
		}
	}
	if f.hasInclude {
		return f.include.Contains(ev.LocalAddr) || f.include.Contains(ev.PeerAddr)
	}
	return true
}
