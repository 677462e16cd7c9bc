// Package fleetsim is a deterministic, seeded simulator of a fleet of hosts
// whose workloads come and go and reuse each other's IP addresses. It drives
// an attribution under test (the real ownership processor, through its
// ConsumeLogs path) with the heartbeat and flow records those hosts would
// emit, under configurable delivery delay, loss, reordering, duplication and
// per-host clock skew, and scores every output record against ground truth:
// who really owned the peer address when the flow started.
//
// Beside it, on the same flows, it runs the event-based baseline that
// heartbeats replace: a current-owner map per address updated by
// assign/unassign events that suffer the same delivery faults.
//
// Time is simulated: nothing sleeps. A virtual clock, advanced in fixed
// ticks, is the processor's clock. Flows are generated and scored as a
// stream, so memory is bounded by the flows in flight, not by the run.
package fleetsim
