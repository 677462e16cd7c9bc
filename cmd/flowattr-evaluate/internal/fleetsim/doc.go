// Package fleetsim is a deterministic, seeded simulator of a fleet of hosts
// whose workloads come and go and reuse each other's IP addresses. Every
// host runs the receiver's local-ownership code (internal/localowner): an
// Ownership fed by a simulated ownership source that names the workloads the
// host holds, the same owner lookup and HeldThroughout check on every flow
// record, and a Claimer that makes the host's claims. Those claim and flow
// records drive the real ownership processor, through its ConsumeLogs path,
// under configurable delivery delay, loss, reordering, duplication and
// per-host clock skew, and every output record is scored against ground
// truth: who really owned the peer address when the flow started.
//
// Beside it, on the same flows, it runs the event-based baseline that
// repeated claims replace: a current-owner map per address updated by
// assign/unassign events that suffer the same delivery faults.
//
// Time is simulated: nothing sleeps. A manual clock, advanced in fixed
// ticks, is the processor's clock; each host's clock is the true time plus
// its skew. Flows are generated and scored as a stream, so memory is bounded
// by the flows in flight, not by the run.
package fleetsim
