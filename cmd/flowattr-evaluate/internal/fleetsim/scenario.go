package fleetsim

import (
	"errors"
	"fmt"
	"time"
)

// Scenario describes one simulated fleet, how its records travel, and how the
// processor under test is configured.
type Scenario struct {
	// Name labels the scenario in reports.
	Name string
	// Seed makes the run reproducible: the same scenario and seed give the
	// same records in the same order and the same result.
	Seed uint64

	// IPs is the size of the address pool; Hosts the number of hosts.
	IPs   int
	Hosts int
	// Services is the number of distinct service.name values workloads get.
	Services int
	// Flows is the number of flows started during Duration (Poisson
	// arrivals). Warmup runs the fleet, claims included, before the first
	// flow so that the run does not start from a cold store.
	Flows    int
	Duration time.Duration
	Warmup   time.Duration

	// MeanLifetime is the mean (exponential) lifetime of a workload on its
	// address: the churn rate per address is 1/MeanLifetime. A freed
	// address is taken by a new workload, on a random host, after a gap
	// uniform in [0, MaxReuseGap).
	MeanLifetime time.Duration
	MaxReuseGap  time.Duration
	// MaxFlowDuration bounds the long-lived flows (see sampleDuration).
	MaxFlowDuration time.Duration

	// ClaimInterval is how often each host closes its claim interval and
	// sends its claims (the receiver's claim_interval).
	ClaimInterval time.Duration
	// MaxHostSkew: every host's clock is off by a fixed amount uniform in
	// [-MaxHostSkew, MaxHostSkew]; two hosts differ by up to twice that.
	MaxHostSkew time.Duration

	// Claims is how claim records (and the baseline's assign/unassign
	// events) travel to the processor; flow records travel on the local
	// pipeline with FlowJitter only and are never lost or duplicated.
	Claims     Delivery
	FlowJitter time.Duration

	// Tick is the virtual clock step: deliveries due within a tick are
	// handed over together, at the tick's end.
	Tick time.Duration

	// Processor is the configuration of the processor under test.
	Processor ProcessorSettings
}

// Delivery describes the faults of a message path.
type Delivery struct {
	// Delay is added to every message, plus a uniform jitter in [0, Jitter).
	Delay  time.Duration
	Jitter time.Duration
	// Loss is the probability a message is dropped.
	Loss float64
	// Reorder is the probability a message is held back by an extra delay
	// uniform in [0, ReorderSpan), overtaking-order style reordering.
	Reorder     float64
	ReorderSpan time.Duration
	// Duplicate is the probability a message is delivered a second time,
	// with an independently drawn delay.
	Duplicate float64
}

// ProcessorSettings are the ownership processor settings the simulation
// varies; everything else keeps its default.
type ProcessorSettings struct {
	MaxWait   time.Duration
	ClockSkew time.Duration
	MergeGap  time.Duration
	Retention time.Duration
}

// DefaultScenario is a small fleet with mild faults, sized to run in a few
// seconds.
func DefaultScenario() Scenario {
	return Scenario{
		Name:            "default",
		Seed:            1,
		IPs:             2_000,
		Hosts:           40,
		Services:        50,
		Flows:           100_000,
		Duration:        10 * time.Minute,
		Warmup:          time.Minute,
		MeanLifetime:    10 * time.Minute,
		MaxReuseGap:     5 * time.Second,
		MaxFlowDuration: 10 * time.Minute,
		ClaimInterval:   10 * time.Second,
		MaxHostSkew:     0,
		Claims: Delivery{
			Delay:  time.Second,
			Jitter: time.Second,
		},
		FlowJitter: time.Second,
		Tick:       250 * time.Millisecond,
		Processor: ProcessorSettings{
			MaxWait:   30 * time.Second,
			ClockSkew: time.Second,
			MergeGap:  30 * time.Second,
			Retention: 15 * time.Minute,
		},
	}
}

// SkewWithinGuard reports whether any two hosts' clocks differ by at most the
// processor's clock_skew guard.
func (s Scenario) SkewWithinGuard() bool {
	return 2*s.MaxHostSkew <= s.Processor.ClockSkew
}

// Validate says what is wrong with s.
func (s Scenario) Validate() error {
	var errs []error
	positive := func(name string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", name, d))
		}
	}
	nonNegative := func(name string, d time.Duration) {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative, got %s", name, d))
		}
	}
	probability := func(name string, p float64) {
		if !(p >= 0 && p <= 1) {
			errs = append(errs, fmt.Errorf("%s must be in [0, 1], got %v", name, p))
		}
	}
	atLeast := func(name string, n, least int) {
		if n < least {
			errs = append(errs, fmt.Errorf("%s must be at least %d, got %d", name, least, n))
		}
	}
	atLeast("IPs", s.IPs, 2)
	if s.IPs > 1<<24 {
		errs = append(errs, fmt.Errorf("IPs must fit in 10.0.0.0/8 (at most %d), got %d", 1<<24, s.IPs))
	}
	atLeast("Hosts", s.Hosts, 1)
	atLeast("Services", s.Services, 1)
	atLeast("Flows", s.Flows, 0)
	positive("Duration", s.Duration)
	nonNegative("Warmup", s.Warmup)
	positive("MeanLifetime", s.MeanLifetime)
	nonNegative("MaxReuseGap", s.MaxReuseGap)
	positive("MaxFlowDuration", s.MaxFlowDuration)
	positive("ClaimInterval", s.ClaimInterval)
	nonNegative("MaxHostSkew", s.MaxHostSkew)
	nonNegative("Claims.Delay", s.Claims.Delay)
	nonNegative("Claims.Jitter", s.Claims.Jitter)
	nonNegative("Claims.ReorderSpan", s.Claims.ReorderSpan)
	probability("Claims.Loss", s.Claims.Loss)
	probability("Claims.Reorder", s.Claims.Reorder)
	probability("Claims.Duplicate", s.Claims.Duplicate)
	nonNegative("FlowJitter", s.FlowJitter)
	positive("Tick", s.Tick)
	nonNegative("Processor.MaxWait", s.Processor.MaxWait)
	nonNegative("Processor.ClockSkew", s.Processor.ClockSkew)
	nonNegative("Processor.MergeGap", s.Processor.MergeGap)
	positive("Processor.Retention", s.Processor.Retention)
	return errors.Join(errs...)
}
