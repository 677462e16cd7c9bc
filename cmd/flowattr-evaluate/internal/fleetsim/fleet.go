package fleetsim

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"time"

	"github.com/flowattr/flowattr/internal/localowner"
	"github.com/flowattr/flowattr/internal/owners"
)

// Epoch is simulated time zero; the simulation works in int64 nanoseconds
// since Epoch.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// segment is one workload's tenure on one address: it owned ip during
// [start, end] of true time, on host.
type segment struct {
	id         int64
	owner      owners.Owner
	ip         int32
	host       int32
	start, end int64
}

// address is the state of one pool address.
type address struct {
	addr netip.Addr
	text string
	cur  *segment // nil while the address is free between two workloads
}

// host is a machine. It runs the receiver's local-ownership code on its own
// clock: an Ownership merged from one source, hostSource, which names the
// workloads the host holds, and a Claimer that closes a claim interval every
// ClaimInterval of true time from a random phase, as the receiver's ticker
// does.
type host struct {
	name      string
	skew      int64 // host clock = true time + skew
	nextClose int64 // true time at which the host next closes its claim interval
	src       hostSource
	own       *localowner.Ownership
	claimer   *localowner.Claimer
}

// fleet is the ownership ground truth, generated lazily in time order.
type fleet struct {
	sc       *Scenario
	rng      *rand.Rand
	addrs    []address
	hosts    []host
	services []string
	nextID   int64
	// now is the true time of the event being simulated, which the
	// hosts' clocks read.
	now int64
}

func newFleet(sc *Scenario) *fleet {
	f := &fleet{
		sc:       sc,
		rng:      rand.New(rand.NewPCG(sc.Seed, 1)),
		addrs:    make([]address, sc.IPs),
		hosts:    make([]host, sc.Hosts),
		services: make([]string, sc.Services),
	}
	for i := range f.services {
		f.services[i] = "svc-" + strconv.Itoa(i)
	}
	for i := range f.hosts {
		h := &f.hosts[i]
		h.name = "host-" + strconv.Itoa(i)
		if sc.MaxHostSkew > 0 {
			h.skew = f.rng.Int64N(2*int64(sc.MaxHostSkew)+1) - int64(sc.MaxHostSkew)
		}
		h.nextClose = 1 + f.rng.Int64N(int64(sc.ClaimInterval))
	}
	for i := range f.addrs {
		a := &f.addrs[i]
		a.addr = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		a.text = a.addr.String()
	}
	return f
}

// exp draws an exponential duration with the given mean, at least 1ns.
func (f *fleet) exp(mean time.Duration) int64 {
	return max(1, int64(f.rng.ExpFloat64()*float64(mean)))
}

// startSegment puts a new workload on ip at time at, on a random host; it
// returns the segment, whose end is already drawn.
func (f *fleet) startSegment(ip int32, at, end int64) *segment {
	f.nextID++
	hostIdx := int32(f.rng.IntN(len(f.hosts)))
	id := "wl-" + strconv.FormatInt(f.nextID, 10)
	s := &segment{
		id: f.nextID,
		owner: owners.Owner{ID: id, Attributes: []owners.Attribute{
			{Name: "host.name", Value: f.hosts[hostIdx].name},
			{Name: "service.name", Value: f.services[f.rng.IntN(len(f.services))]},
		}},
		ip:    ip,
		host:  hostIdx,
		start: at,
		end:   end,
	}
	a := &f.addrs[ip]
	a.cur = s
	f.hosts[hostIdx].src.set(a.addr, &s.owner)
	return s
}

// endSegment ends the workload on ip, which its host's source drops at once.
func (f *fleet) endSegment(ip int32) *segment {
	a := &f.addrs[ip]
	s := a.cur
	a.cur = nil
	f.hosts[s.host].src.set(a.addr, nil)
	return s
}

// reuseGap draws how long a freed address stays free.
func (f *fleet) reuseGap() int64 {
	if f.sc.MaxReuseGap <= 0 {
		return 0
	}
	return f.rng.Int64N(int64(f.sc.MaxReuseGap))
}

// sampleDuration draws a flow duration: mostly short RPCs, some requests of
// seconds, and a few long-lived connections up to MaxFlowDuration.
func sampleDuration(rng *rand.Rand, maxDuration time.Duration) int64 {
	var d float64
	switch u := rng.Float64(); {
	case u < 0.70: // RPCs: median 20ms
		d = 0.020 * math.Exp(rng.NormFloat64())
	case u < 0.95: // requests and small transfers: median 3s
		d = 3 * math.Exp(rng.NormFloat64())
	default: // long-lived: log-uniform from one minute to the maximum
		lo, hi := math.Log(60), math.Log(max(60, maxDuration.Seconds()))
		d = math.Exp(lo + rng.Float64()*(hi-lo))
	}
	return min(int64(d*float64(time.Second)), int64(maxDuration))
}
