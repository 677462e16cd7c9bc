package fleetsim

import (
	"context"
	"maps"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/flowattr/flowattr/internal/localowner"
	"github.com/flowattr/flowattr/internal/owners"
)

// hostSource is the ownership source of one simulated host: the single
// address of every workload the host holds, named for that workload. The
// simulator feeds it through set, which calls onChange at once, so the
// host's Ownership merges a workload the moment it starts or ends, as a
// source with no delay would. Everything runs on the simulator's goroutine.
type hostSource struct {
	entries  map[netip.Prefix]owners.Owner
	onChange func()
}

var _ localowner.Source = (*hostSource)(nil)

// Entries implements localowner.Source.
func (s *hostSource) Entries() map[netip.Prefix]owners.Owner { return s.entries }

// Start implements localowner.Source: it keeps onChange.
func (s *hostSource) Start(_ context.Context, onChange func()) error {
	s.onChange = onChange
	return nil
}

// Shutdown implements localowner.Source.
func (*hostSource) Shutdown() error { return nil }

// set names owner as the owner of addr, or nobody when owner is nil, in a
// new map (a returned map is never modified), and merges it once started.
func (s *hostSource) set(addr netip.Addr, owner *owners.Owner) {
	m := make(map[netip.Prefix]owners.Owner, len(s.entries)+1)
	maps.Copy(m, s.entries)
	p := netip.PrefixFrom(addr, addr.BitLen())
	if owner != nil {
		m[p] = *owner
	} else {
		delete(m, p)
	}
	s.entries = m
	if s.onChange != nil {
		s.onChange()
	}
}

// wallTime is true time t on h's wall clock.
func (h *host) wallTime(t int64) time.Time { return Epoch.Add(time.Duration(t + h.skew)) }

// start starts h's local ownership at true time zero with the workloads it
// holds then, which are therefore initial, and its claimer, whose first
// interval starts then. Its wall clock reads the fleet's true time plus
// h's skew; its boot clock reads the true time, and never steps.
func (h *host) start(ctx context.Context, f *fleet) error {
	h.own = localowner.New([]localowner.Source{&h.src}, localowner.Settings{
		Now:     func() time.Time { return h.wallTime(f.now) },
		BootNow: func() time.Duration { return time.Duration(f.now) },
	})
	if err := h.own.Start(ctx); err != nil {
		return err
	}
	h.claimer = localowner.NewClaimer(h.own, h.name, h.wallTime(f.now))
	return nil
}

// endFlow does what the receiver does with fl's record when fl closes on
// h, its local host, at true time fl.end (addFlow): it looks the local
// address addr up, names the owner on the record only if that owner held
// the address throughout the flow, and lets the claimer observe the flow
// whenever the address has an owner. It reports whether the record names
// a local owner.
func (h *host) endFlow(fl *flow, addr netip.Addr) bool {
	start, end := h.wallTime(fl.start), h.wallTime(fl.end)
	entry, owned := h.own.Lookup(addr)
	switch {
	case !owned:
		return false
	case !entry.HeldThroughout(start, time.Duration(fl.start), true):
		// Claims still cover the part of the flow since the owner was
		// known.
		h.claimer.Observe(addr, entry, start, end)
		return false
	default:
		h.claimer.Observe(addr, entry, start, end)
		fl.localOwner = entry.Owner()
		return true
	}
}

// workloadID returns the segment ID of a workload's owner ID, "wl-N"; 0,
// which no workload has, for any other.
func workloadID(ownerID string) int64 {
	digits, ok := strings.CutPrefix(ownerID, "wl-")
	if !ok {
		return 0
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// ipIndex returns the pool index of a pool address.
func ipIndex(a netip.Addr) int32 {
	b := a.As4()
	return int32(b[1])<<16 | int32(b[2])<<8 | int32(b[3])
}
