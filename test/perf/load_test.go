//go:build linux

package perf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
)

// workloads is the number of distinct owners: addresses are spread over
// them, as pods of a thousand deployments, so owners repeat across addresses
// as they do in a cluster (the store interns them).
const workloads = 1000

var workloadOwners = func() []owners.Owner {
	os := make([]owners.Owner, workloads)
	for i := range os {
		os[i] = owners.Owner{ID: fmt.Sprintf("workload-%d", i), Attributes: []owners.Attribute{
			{Name: "k8s.namespace.name", Value: fmt.Sprintf("team-%d", i%40)},
			{Name: "service.name", Value: fmt.Sprintf("service-%d", i)},
		}}
	}
	return os
}()

// address returns the i-th tracked address, inside 10.0.0.0/8.
func address(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// ownerOf is the owner of address i during its r-th range: consecutive
// ranges of one address belong to different owners (the address was reused).
func ownerOf(i, r int) owners.Owner {
	return workloadOwners[(i+r*7)%workloads]
}

// encode turns ld into an encoded ExportLogsServiceRequest.
func encode(ld plog.Logs) ([]byte, error) {
	return plogotlp.NewExportRequestFromLogs(ld).MarshalProto()
}

// newScope adds a ResourceLogs for host and returns its one ScopeLogs' records.
func newScope(ld plog.Logs, host string) plog.LogRecordSlice {
	rl := ld.ResourceLogs().AppendEmpty()
	ra := rl.Resource().Attributes()
	ra.PutStr("host.name", host)
	ra.PutStr("os.type", "linux")
	sl := rl.ScopeLogs().AppendEmpty()
	sl.Scope().SetName("github.com/flowattr/flowattr/receiver/ebpfflowreceiver")
	return sl.LogRecords()
}

// flowBatch builds the n-th batch of size flow records as the ebpfflow
// receiver writes them, from one node: the local side cycles over
// localsPerBatch of the tracked addresses (the node's pods), each owned by
// ownerOf(local, 0); peers are spread over all tracked addresses. Flows
// started at start and closed at end.
func flowBatch(n, size, tracked, localsPerBatch int, start, end time.Time) plog.Logs {
	ld := plog.NewLogs()
	lrs := newScope(ld, fmt.Sprintf("node-%d", n))
	lrs.EnsureCapacity(size)
	for i := range size {
		local := (n*localsPerBatch + i%localsPerBatch) % tracked
		// A multiplicative hash spreads consecutive records over all peers.
		peer := ((n*size+i)*7919 + 13) % tracked
		lr := lrs.AppendEmpty()
		lr.SetEventName(flowschema.EventFlow)
		lr.SetTimestamp(pcommon.NewTimestampFromTime(end))
		lr.SetObservedTimestamp(pcommon.NewTimestampFromTime(end))
		a := lr.Attributes()
		a.EnsureCapacity(24)
		localAddr, peerAddr := address(local).String(), address(peer).String()
		localPort, peerPort := int64(30000+i%30000), int64(8080)
		a.PutStr(flowschema.AttrNetworkTransport, "tcp")
		a.PutStr(flowschema.AttrNetworkType, "ipv4")
		a.PutStr(flowschema.AttrNetworkLocalAddress, localAddr)
		a.PutInt(flowschema.AttrNetworkLocalPort, localPort)
		a.PutStr(flowschema.AttrNetworkPeerAddress, peerAddr)
		a.PutInt(flowschema.AttrNetworkPeerPort, peerPort)
		a.PutStr(flowschema.AttrFlowRole, flowschema.RoleClient)
		a.PutStr(flowschema.AttrClientAddress, localAddr)
		a.PutInt(flowschema.AttrClientPort, localPort)
		a.PutStr(flowschema.AttrServerAddress, peerAddr)
		a.PutInt(flowschema.AttrServerPort, peerPort)
		a.PutStr(flowschema.AttrFlowState, flowschema.FlowStateClosed)
		a.PutInt(flowschema.AttrFlowStartTime, start.UnixNano())
		a.PutInt(flowschema.AttrFlowBytesSent, int64(1200+i))
		a.PutInt(flowschema.AttrFlowBytesReceived, int64(48000+i))
		a.PutInt(flowschema.AttrFlowSegmentsSent, 12)
		a.PutInt(flowschema.AttrFlowSegmentsReceived, 40)
		a.PutInt(flowschema.AttrFlowRetransmits, 0)
		a.PutInt(flowschema.AttrFlowSRTT, 180)
		a.PutInt(flowschema.AttrProcessPID, int64(4000+local%1000))
		a.PutStr(flowschema.AttrProcessExecutableName, "app")
		a.PutInt(flowschema.AttrCgroupID, int64(9000+local%1000))
		a.PutInt(flowschema.AttrNetnsInode, int64(4026531840+local%1000))
		a.PutInt(flowschema.AttrFlowSocketCookie, int64(n*size+i+1))
		flowschema.PutOwner(a, flowschema.PrefixLocalOwner, ownerOf(local, 0))
	}
	return ld
}

// claimBatch builds claims for addresses [from, to), each claiming
// its r-th range [start, end] for ownerOf(i, r).
func claimBatch(from, to, r int, start, end time.Time) plog.Logs {
	ld := plog.NewLogs()
	lrs := newScope(ld, "claims")
	lrs.EnsureCapacity(to - from)
	for i := from; i < to; i++ {
		flowschema.PutClaim(lrs.AppendEmpty(), flowschema.Claim{
			Address: address(i),
			Owner:   ownerOf(i, r),
			Start:   start,
			End:     end,
			Sender:  fmt.Sprintf("node-%d", i%500),
		})
	}
	return ld
}

// sendClaims claims range r = [start+r*step, start+r*step+length] for
// every address in [0, addresses) and every r < ranges, in batches of
// batchSize over senders concurrent requests. Ranges are sent oldest first,
// so each claim extends or follows the newest range of its address.
func sendClaims(ctx context.Context, c *otlpClient, addresses, ranges, batchSize, senders int, start time.Time, step, length time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for r := range ranges {
		from := start.Add(time.Duration(r) * step)
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			errs []error
		)
		slots := make(chan struct{}, senders)
		for lo := 0; lo < addresses && ctx.Err() == nil; lo += batchSize {
			hi := min(lo+batchSize, addresses)
			slots <- struct{}{}
			wg.Go(func() {
				defer func() { <-slots }()
				err := sendClaimBatch(ctx, c, lo, hi, r, from, from.Add(length))
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					cancel()
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	return nil
}

func sendClaimBatch(ctx context.Context, c *otlpClient, from, to, r int, start, end time.Time) error {
	req, err := encode(claimBatch(from, to, r, start, end))
	if err != nil {
		return err
	}
	if err := c.export(ctx, req); err != nil {
		return fmt.Errorf("claims for addresses %d-%d, range %d: %w", from, to, r, err)
	}
	return nil
}
