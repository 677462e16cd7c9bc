package flowmapexporter

import (
	"time"

	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowattr/flowattr/internal/clock"
	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/owners"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// rec describes a flow record as the ownership processor hands it on.
type rec struct {
	state            string // default closed
	role             string // default client
	local, peer      *owners.Owner
	status, reason   string // default attributed when peer is set, else unattributed
	localPort        int64
	peerPort         int64
	sent, received   int64
	srttUS           int64 // 0: absent
	retransmits      int64
	errName          string
	noStatus         bool
	event            string // default flowattr.flow
	extraLocalAttrs  map[string]string
	skipLocalOwnerID bool
}

func workload(id, service, namespace string) *owners.Owner {
	o := owners.Owner{ID: id}
	if namespace != "" {
		o.Attributes = append(o.Attributes, owners.Attribute{Name: "k8s.namespace.name", Value: namespace})
	}
	if service != "" {
		o.Attributes = append(o.Attributes, owners.Attribute{Name: "service.name", Value: service})
	}
	return &o
}

func putOwner(lr plog.LogRecord, prefix string, o *owners.Owner) {
	lr.Attributes().PutStr(prefix+owners.IDAttribute, o.ID)
	for _, a := range o.Attributes {
		lr.Attributes().PutStr(prefix+a.Name, a.Value)
	}
}

func (r rec) put(lr plog.LogRecord) {
	event := r.event
	if event == "" {
		event = flowschema.EventFlow
	}
	lr.SetEventName(event)
	a := lr.Attributes()
	a.PutStr(flowschema.AttrNetworkTransport, "tcp")
	a.PutStr(flowschema.AttrNetworkLocalAddress, "10.0.0.1")
	a.PutStr(flowschema.AttrNetworkPeerAddress, "10.0.0.2")
	state := r.state
	if state == "" {
		state = flowschema.FlowStateClosed
	}
	a.PutStr(flowschema.AttrFlowState, state)
	role := r.role
	if role == "" {
		role = flowschema.RoleClient
	}
	a.PutStr(flowschema.AttrFlowRole, role)
	localPort, peerPort := r.localPort, r.peerPort
	if localPort == 0 {
		localPort = 40000
	}
	if peerPort == 0 {
		peerPort = 443
	}
	a.PutInt(flowschema.AttrNetworkLocalPort, localPort)
	a.PutInt(flowschema.AttrNetworkPeerPort, peerPort)
	a.PutInt(flowschema.AttrFlowBytesSent, r.sent)
	a.PutInt(flowschema.AttrFlowBytesReceived, r.received)
	a.PutInt(flowschema.AttrFlowRetransmits, r.retransmits)
	if r.srttUS != 0 {
		a.PutInt(flowschema.AttrFlowSRTT, r.srttUS)
	}
	if r.errName != "" {
		a.PutStr(flowschema.AttrFlowError, r.errName)
	}
	if r.local != nil {
		putOwner(lr, flowschema.PrefixLocalOwner, r.local)
	}
	for k, v := range r.extraLocalAttrs {
		a.PutStr(flowschema.PrefixLocalOwner+k, v)
	}
	if r.skipLocalOwnerID {
		a.Remove(flowschema.PrefixLocalOwner + owners.IDAttribute)
	}
	if r.noStatus {
		return
	}
	status := r.status
	if status == "" {
		status = "unattributed"
		if r.peer != nil {
			status = "attributed"
		}
	}
	a.PutStr(flowschema.AttrPeerAttributionStatus, status)
	if r.reason != "" {
		a.PutStr(flowschema.AttrPeerAttributionReason, r.reason)
	}
	if r.peer != nil && status == "attributed" {
		putOwner(lr, flowschema.PrefixPeerOwner, r.peer)
	}
}

func logsOf(recs ...rec) plog.Logs {
	ld := plog.NewLogs()
	lrs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	for _, r := range recs {
		r.put(lrs.AppendEmpty())
	}
	return ld
}

// testMap is an aggregate with its parser, fed records as the exporter
// feeds it.
type testMap struct {
	agg    *aggregate
	parser parser
	clock  *clock.Manual
}

func newTestMap(window time.Duration, maxNodes, maxEdges int) *testMap {
	c := clock.NewManual(t0)
	return &testMap{
		agg:    newAggregate(c, window, maxNodes, maxEdges, owners.DefaultLimits()),
		parser: newParser("service.name", "k8s.namespace.name"),
		clock:  c,
	}
}

// add feeds records and returns the outcome of each and what add did.
func (m *testMap) add(recs ...rec) ([]outcome, []addResult) {
	ld := logsOf(recs...)
	lrs := ld.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords()
	outcomes := make([]outcome, lrs.Len())
	var flows []flow
	for i := range lrs.Len() {
		var f flow
		outcomes[i], _ = m.parser.parse(lrs.At(i), &f)
		if outcomes[i] == outcomeMapped {
			flows = append(flows, f)
		}
	}
	results := make([]addResult, len(flows))
	m.agg.addBatch(flows, results)
	return outcomes, results
}

func (m *testMap) graph() (nodes map[string]Node, edges map[string]Edge) {
	_, _, ns, es := m.agg.snapshot()
	nodes, edges = map[string]Node{}, map[string]Edge{}
	for _, n := range ns {
		nodes[n.ID] = n
	}
	for _, e := range es {
		edges[e.ID] = e
	}
	return nodes, edges
}
