package ebpfflowreceiver // import "github.com/flowattr/flowattr/receiver/ebpfflowreceiver"

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receiverhelper"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"

	"github.com/flowattr/flowattr/internal/flowschema"
	"github.com/flowattr/flowattr/internal/localowner"
	"github.com/flowattr/flowattr/internal/localowner/kube"
	"github.com/flowattr/flowattr/internal/owners"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/metadata"
	"github.com/flowattr/flowattr/receiver/ebpfflowreceiver/internal/tracer"
)

// flowTracer is what the receiver needs from the kernel side. It is
// *tracer.Tracer in production and a fake in unit tests.
type flowTracer interface {
	Read(ctx context.Context, handle func(*tracer.Event)) error
	Active(ctx context.Context, handle func(*tracer.Event)) error
	Stats() (tracer.Stats, error)
	Close() error
}

// environment is what the receiver takes from the host, replaceable in tests.
type environment struct {
	newTracer func(tracer.Options) (flowTracer, error)
	now       func() time.Time
	// bootNow reads the kernel's boot clock, that of Event.StartBoot.
	bootNow       func() time.Duration
	machineIDFile string
	hostAddrs     func() ([]netip.Addr, error)
	// kubeClient returns the kubernetes source's client of the API
	// server: from the kubeconfig at path, in-cluster when empty.
	kubeClient func(path string) (kubernetes.Interface, error)
	// getenv reads the environment (K8S_NODE_NAME).
	getenv func(string) string
	// netnsInode returns the inode of the collector's network namespace.
	netnsInode func() (uint32, error)
	// openNAT opens the connection tracking of the collector's network
	// namespace.
	openNAT func() (natTable, error)
}

func hostEnvironment() environment {
	return environment{
		newTracer: func(o tracer.Options) (flowTracer, error) {
			t, err := tracer.New(o)
			if err != nil {
				return nil, err
			}
			return t, nil
		},
		now:           time.Now,
		bootNow:       tracer.BootTime,
		machineIDFile: machineIDPath,
		hostAddrs:     localowner.HostUnicastAddrs,
		kubeClient: func(path string) (kubernetes.Interface, error) {
			return kube.NewClient(path, "otelcol-flowattr")
		},
		getenv:     os.Getenv,
		netnsInode: ownNetnsInode,
		openNAT:    openConntrack,
	}
}

// flowReceiver reads flow events from the tracer and emits flow and claim
// records. Three goroutines run while it is started:
//
//   - the reader drains the kernel ring buffer into a bounded queue and never
//     waits: when the queue is full the event is dropped and counted, so a
//     slow pipeline costs counted records here rather than silent loss in
//     the kernel;
//   - the active reporter periodically lists open connections into a queue
//     of its own, waiting for room: it holds up neither the ring nor, when
//     the pipeline is slow, the ring's queue, which the emitter serves
//     first;
//   - the emitter owns the batch and the claim aggregation: it converts
//     queued events to records, flushes batches, and emits claims.
type flowReceiver struct {
	cfg      *Config
	settings receiver.Settings
	next     consumer.Logs
	env      environment

	obsrecv   *receiverhelper.ObsReport
	telemetry *metadata.TelemetryBuilder
	filter    *flowFilter

	// Set by Start.
	host      hostIdentity
	resource  pcommon.Resource
	ownership *localowner.Ownership
	// kube is the kubernetes source when enabled: it names the hostNetwork
	// pods behind sockets on the node's addresses.
	kube *kube.Source
	// newAddresses signals that a merge published new addresses, to be
	// claimed at once.
	newAddresses chan struct{}
	tracer       flowTracer
	queue        chan tracer.Event
	interim      chan tracer.Event // the active reporter's open connections
	claims       *localowner.Claimer
	batch        batch
	flows        *flowWriter
	nat          *natResolver // nil when nat.service_cidrs is empty

	stopIngest context.CancelFunc
	ingest     sync.WaitGroup
	stopEmit   context.CancelFunc
	emit       sync.WaitGroup

	// Precomputed metric attribute options.
	stateAttrs   map[string]metric.AddOption
	basisAttrs   map[string]metric.AddOption
	unownedAttrs map[string]metric.AddOption
	reloadAttrs  map[string]metric.AddOption
	natAttrs     map[[2]string]metric.AddOption // by at and result
	refusedAttrs map[string]metric.AddOption
	gapAttrs     map[string]metric.AddOption
}

func newFlowReceiver(settings receiver.Settings, cfg *Config, next consumer.Logs, env environment) (*flowReceiver, error) {
	obsrecv, err := receiverhelper.NewObsReport(receiverhelper.ObsReportSettings{
		ReceiverID:             settings.ID,
		Transport:              "ebpf",
		ReceiverCreateSettings: settings,
	})
	if err != nil {
		return nil, err
	}
	telemetry, err := metadata.NewTelemetryBuilder(settings.TelemetrySettings)
	if err != nil {
		return nil, err
	}
	var netns uint32
	if cfg.Filter.OwnNetnsOnly {
		if netns, err = env.netnsInode(); err != nil {
			return nil, fmt.Errorf("filter.own_netns_only: %w", err)
		}
	}
	filter, err := newFlowFilter(cfg.Filter, netns)
	if err != nil {
		return nil, err
	}
	attrOptions := func(key string, values ...string) map[string]metric.AddOption {
		m := make(map[string]metric.AddOption, len(values))
		for _, v := range values {
			m[v] = metric.WithAttributeSet(attribute.NewSet(attribute.String(key, v)))
		}
		return m
	}
	return &flowReceiver{
		cfg:          cfg,
		settings:     settings,
		next:         next,
		env:          env,
		obsrecv:      obsrecv,
		telemetry:    telemetry,
		filter:       filter,
		stateAttrs:   attrOptions("state", flowschema.FlowStateClosed, flowschema.FlowStateFailed, flowschema.FlowStateActive),
		basisAttrs:   attrOptions("basis", localowner.BasisFlow, localowner.BasisSource),
		unownedAttrs: attrOptions("reason", unownedUnknownAddress, unownedOwnerChanged),
		reloadAttrs:  attrOptions("result", localowner.ReloadSuccess, localowner.ReloadError, localowner.ReloadDeferred),
		natAttrs:     natAttrOptions(),
		refusedAttrs: attrOptions("reason", kube.RefusedOutsidePodCIDRs, kube.RefusedOwnerTooLarge),
		gapAttrs:     attrOptions("resource", kube.ResourcePods, kube.ResourceServices),
	}, nil
}

func natAttrOptions() map[[2]string]metric.AddOption {
	m := map[[2]string]metric.AddOption{}
	for _, at := range []string{natAtConnect, natAtRecord} {
		for _, result := range []string{natTranslated, natUntranslated, natNotFound, natError, natUnavailable} {
			m[[2]string{at, result}] = metric.WithAttributeSet(attribute.NewSet(attribute.String("at", at), attribute.String("result", result)))
		}
	}
	return m
}

// Start exports the counters at zero, loads the tracer and starts the
// goroutines. Its errors say what the host lacks and how to fix it.
func (r *flowReceiver) Start(ctx context.Context, host component.Host) error {
	r.zeroCounters(ctx)
	id, err := readHostIdentity(r.env.machineIDFile)
	if err != nil {
		return err
	}
	r.host = id
	sources, err := r.buildSources()
	if err != nil {
		return err
	}
	r.newAddresses = make(chan struct{}, 1)
	r.ownership = localowner.New(sources, localowner.Settings{
		Now: r.env.now, BootNow: r.env.bootNow, Logger: r.settings.Logger,
		NewAddresses: func() {
			select {
			case r.newAddresses <- struct{}{}:
			default:
			}
		},
	})
	if err := r.ownership.Start(ctx); err != nil {
		return fmt.Errorf("starting ownership sources: %w", err)
	}

	natPrefixes, err := r.cfg.NAT.prefixes()
	if err != nil {
		_ = r.ownership.Shutdown()
		return err
	}
	tr, err := r.env.newTracer(tracer.Options{RingBufferSize: r.cfg.RingBufferSize, MaxConnections: r.cfg.MaxConnections, NATPrefixes: natPrefixes})
	if err != nil {
		_ = r.ownership.Shutdown()
		if errors.Is(err, tracer.ErrUnsupported) {
			return fmt.Errorf("the ebpfflow receiver cannot trace TCP connections on this host: %w "+
				"(it needs Linux 5.8 or later with BTF at /sys/kernel/btf/vmlinux, and must run as root "+
				"or with the capabilities CAP_BPF and CAP_PERFMON; see the receiver's README)", err)
		}
		return fmt.Errorf("the ebpfflow receiver cannot load its eBPF programs: %w", err)
	}
	r.tracer = tr
	if err := r.registerStatsCallbacks(); err != nil {
		_ = tr.Close()
		_ = r.ownership.Shutdown()
		return err
	}

	rb := metadata.NewResourceBuilder(r.cfg.ResourceAttributes)
	rb.SetHostName(id.name)
	if id.id != "" {
		rb.SetHostID(id.id)
	}
	rb.SetOsType("linux")
	r.resource = rb.Emit()
	sender := r.cfg.Sender
	if sender == "" {
		sender = id.name
	}
	r.claims = localowner.NewClaimer(r.ownership, sender, r.env.now())
	r.queue = make(chan tracer.Event, r.cfg.QueueSize)
	r.interim = make(chan tracer.Event, interimQueueSize)
	r.batch = newBatch(r.resource, r.settings.BuildInfo.Version, r.cfg.MaxBatchSize)
	r.flows = newFlowWriter()
	if len(natPrefixes) > 0 {
		r.nat = r.newNATResolver(natPrefixes)
	}

	// The goroutines must outlive Start's context.
	emitCtx, stopEmit := context.WithCancel(context.WithoutCancel(ctx))
	r.stopEmit = stopEmit
	r.emit.Add(1)
	go func() {
		defer r.emit.Done()
		r.emitLoop(emitCtx)
	}()

	ingestCtx, stopIngest := context.WithCancel(context.WithoutCancel(ctx))
	r.stopIngest = stopIngest
	r.ingest.Add(1)
	go func() {
		defer r.ingest.Done()
		if err := tr.Read(ingestCtx, r.enqueueFromRing); err != nil && ingestCtx.Err() == nil {
			r.settings.Logger.Error("Reading flow events failed; no more flow records will be emitted", zap.Error(err))
			componentstatus.ReportStatus(host, componentstatus.NewFatalErrorEvent(err))
		}
	}()
	if r.cfg.ActiveInterval > 0 {
		r.ingest.Add(1)
		go func() {
			defer r.ingest.Done()
			r.activeLoop(ingestCtx)
		}()
	}
	return nil
}

// Shutdown stops reading once the reader has drained what the ring holds,
// closes the tracer, then lets the emitter hand over what is queued and the
// last claims before it stops. Closing the tracer first would discard
// the events of the connections that closed since the reader last woke.
func (r *flowReceiver) Shutdown(context.Context) error {
	var errs []error
	if r.stopIngest != nil {
		r.stopIngest()
	}
	r.ingest.Wait()
	if r.tracer != nil {
		errs = append(errs, r.tracer.Close())
	}
	if r.stopEmit != nil {
		r.stopEmit()
	}
	r.emit.Wait()
	if r.nat != nil {
		errs = append(errs, r.nat.close())
	}
	if r.ownership != nil {
		errs = append(errs, r.ownership.Shutdown())
	}
	r.telemetry.Shutdown()
	return errors.Join(errs...)
}

// newNATResolver opens connection tracking for the lookups of flows to
// prefixes. Without it the receiver still runs: those flows go out
// untranslated, counted as unavailable.
func (r *flowReceiver) newNATResolver(prefixes []netip.Prefix) *natResolver {
	table, err := r.env.openNAT()
	if err != nil {
		r.settings.Logger.Warn("Connection tracking is unavailable: flows to nat.service_cidrs go out without their translated peer (counted in ebpfflow_nat_lookups, result unavailable)", zap.Error(err))
		table = nil
	}
	// Answers wait for their connection's close; there are no more open
	// connections than the kernel side tracks.
	maxPending := r.cfg.MaxConnections
	if maxPending == 0 {
		maxPending = tracer.DefaultMaxConnections
	}
	return newNATResolver(prefixes, table, maxPending, r.settings.Logger,
		func(at, result string) {
			r.telemetry.EbpfflowNatLookups.Add(context.Background(), 1, r.natAttrs[[2]string{at, result}])
		},
		func() { r.telemetry.EbpfflowNatPendingEvicted.Add(context.Background(), 1) })
}

func (r *flowReceiver) buildSources() ([]localowner.Source, error) {
	var sources []localowner.Source
	for _, name := range r.cfg.Ownership.sourceOrder() {
		switch name {
		case sourceStatic:
			configured, err := owners.ParseEntries("ownership.static.entries", r.cfg.Ownership.Static.Entries, r.cfg.Ownership.OwnerLimits)
			if err != nil {
				return nil, err
			}
			var host *localowner.HostAddresses
			if r.cfg.Ownership.Static.HostAddresses {
				hostOwner := r.host.owner()
				if err := r.cfg.Ownership.OwnerLimits.Check(hostOwner); err != nil {
					return nil, fmt.Errorf("ownership.static.host_addresses: the host as an owner is beyond ownership.owner_limits: %w", err)
				}
				// Listing the host's addresses again every claim interval
				// bounds how long a lost address is still claimed.
				host = &localowner.HostAddresses{Owner: hostOwner, List: r.env.hostAddrs, RefreshEvery: r.cfg.ClaimInterval}
			}
			s, err := localowner.NewStaticSource(configured, host, r.settings.Logger)
			if err != nil {
				return nil, fmt.Errorf("ownership.static.host_addresses: %w", err)
			}
			sources = append(sources, s)
		case sourceFile:
			f := r.cfg.Ownership.File
			sources = append(sources, localowner.NewFileSource(f.Path, f.PollInterval, r.cfg.Ownership.OwnerLimits, r.settings.Logger, r.recordReload))
		case sourceKubernetes:
			k, err := r.buildKubeSource()
			if err != nil {
				return nil, err
			}
			r.kube = k
			sources = append(sources, k)
		}
	}
	return sources, nil
}

func (r *flowReceiver) buildKubeSource() (*kube.Source, error) {
	cfg := r.cfg.Ownership.Kubernetes
	node := cfg.NodeName
	if node == "" {
		node = r.env.getenv(kube.NodeNameEnv)
	}
	if node == "" {
		return nil, fmt.Errorf("ownership.kubernetes.node_name: empty and %s is not set; set it from the downward API (fieldRef spec.nodeName)", kube.NodeNameEnv)
	}
	client, err := r.env.kubeClient(cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("ownership.kubernetes: %w", err)
	}
	ctx := context.Background()
	return kube.New(cfg, kube.Settings{
		Client: client, Node: node, Limits: r.cfg.Ownership.OwnerLimits, Now: r.env.now,
		Logger: r.settings.Logger.With(zap.String("source", sourceKubernetes)),
		Telemetry: kube.Telemetry{
			AddressRefused: func(reason string) {
				r.telemetry.EbpfflowKubernetesAddressesRefused.Add(ctx, 1, r.refusedAttrs[reason])
			},
			AttributesDropped: func(n int) { r.telemetry.EbpfflowKubernetesAttributesDropped.Add(ctx, int64(n)) },
			WatchGap: func(resource string) {
				r.telemetry.EbpfflowKubernetesWatchGaps.Add(ctx, 1, r.gapAttrs[resource])
			},
		},
	})
}

func (r *flowReceiver) recordReload(result string) {
	r.telemetry.EbpfflowOwnershipFileReloads.Add(context.Background(), 1, r.reloadAttrs[result])
}

// zeroCounters adds 0 to every counter under each attribute set known up
// front, so that each series is exported from the start and an alert on a
// counter that stays at zero (queue drops, unowned flows, file load
// errors) sees 0 rather than no data. The kernel's counters are observed
// from the tracer's statistics.
func (r *flowReceiver) zeroCounters(ctx context.Context) {
	r.telemetry.EbpfflowQueueDropped.Add(ctx, 0)
	r.telemetry.EbpfflowFlowsFiltered.Add(ctx, 0)
	for _, attrs := range r.stateAttrs {
		r.telemetry.EbpfflowFlowsEmitted.Add(ctx, 0, attrs)
	}
	for _, attrs := range r.unownedAttrs {
		r.telemetry.EbpfflowFlowsUnowned.Add(ctx, 0, attrs)
	}
	for _, attrs := range r.basisAttrs {
		r.telemetry.EbpfflowClaimsEmitted.Add(ctx, 0, attrs)
	}
	if r.cfg.Ownership.File.Path != "" {
		for _, attrs := range r.reloadAttrs {
			r.telemetry.EbpfflowOwnershipFileReloads.Add(ctx, 0, attrs)
		}
	}
	if len(r.cfg.NAT.ServiceCIDRs) > 0 {
		for _, attrs := range r.natAttrs {
			r.telemetry.EbpfflowNatLookups.Add(ctx, 0, attrs)
		}
		r.telemetry.EbpfflowNatPendingEvicted.Add(ctx, 0)
	}
	if r.cfg.Ownership.Kubernetes.Enabled {
		for _, attrs := range r.refusedAttrs {
			r.telemetry.EbpfflowKubernetesAddressesRefused.Add(ctx, 0, attrs)
		}
		r.telemetry.EbpfflowKubernetesAttributesDropped.Add(ctx, 0)
		r.telemetry.EbpfflowKubernetesWatchGaps.Add(ctx, 0, r.gapAttrs[kube.ResourcePods])
		if r.cfg.Ownership.Kubernetes.Services {
			r.telemetry.EbpfflowKubernetesWatchGaps.Add(ctx, 0, r.gapAttrs[kube.ResourceServices])
		}
	}
}

func (r *flowReceiver) registerStatsCallbacks() error {
	return errors.Join(
		r.telemetry.RegisterEbpfflowKernelEventsLostCallback(func(_ context.Context, o metric.Int64Observer) error {
			if st, err := r.tracer.Stats(); err == nil {
				o.Observe(int64(st.LostEvents))
			}
			return nil
		}),
		r.telemetry.RegisterEbpfflowKernelBirthMapFullCallback(func(_ context.Context, o metric.Int64Observer) error {
			if st, err := r.tracer.Stats(); err == nil {
				o.Observe(int64(st.BirthMapFull))
			}
			return nil
		}),
		r.telemetry.RegisterEbpfflowKernelListenerMapFullCallback(func(_ context.Context, o metric.Int64Observer) error {
			if st, err := r.tracer.Stats(); err == nil {
				o.Observe(int64(st.ListenerMapFull))
			}
			return nil
		}),
		r.telemetry.RegisterEbpfflowKernelRecursionMissesCallback(func(_ context.Context, o metric.Int64Observer) error {
			if st, err := r.tracer.Stats(); err == nil {
				o.Observe(int64(st.RecursionMisses))
			}
			return nil
		}),
		r.telemetry.RegisterEbpfflowRingFillRatioCallback(func(_ context.Context, o metric.Float64Observer) error {
			if st, err := r.tracer.Stats(); err == nil && st.RingBytesSize > 0 {
				o.Observe(float64(st.RingBytesUsed) / float64(st.RingBytesSize))
			}
			return nil
		}),
	)
}

// enqueueFromRing runs on the ring reader's goroutine: it must not wait.
func (r *flowReceiver) enqueueFromRing(ev *tracer.Event) {
	if !r.filter.keep(ev) {
		// A connect event is no flow: its flow's close is counted.
		if ev.Kind != tracer.KindConnected {
			r.telemetry.EbpfflowFlowsFiltered.Add(context.Background(), 1)
		}
		return
	}
	select {
	case r.queue <- *ev:
	default:
		r.telemetry.EbpfflowQueueDropped.Add(context.Background(), 1)
	}
}

func (r *flowReceiver) activeLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.ActiveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := r.tracer.Active(ctx, func(ev *tracer.Event) {
			if !r.filter.keep(ev) {
				r.telemetry.EbpfflowFlowsFiltered.Add(ctx, 1)
				return
			}
			// The active pass is not the ring reader: waiting for room
			// here delays only the interim reports. Had it waited on the
			// ring's queue, every slot the emitter freed would go to it,
			// and the ring's closes would be dropped for the whole pass.
			select {
			case r.interim <- *ev:
			case <-ctx.Done():
			}
		})
		if err != nil && ctx.Err() == nil {
			r.settings.Logger.Warn("Listing open connections failed; interim records for this pass are missing", zap.Error(err))
		}
	}
}

func (r *flowReceiver) emitLoop(ctx context.Context) {
	flush := time.NewTicker(r.cfg.FlushInterval)
	defer flush.Stop()
	claimTick := time.NewTicker(r.cfg.ClaimInterval)
	defer claimTick.Stop()
	for {
		// The ring's events before the interim ones: the ring reader
		// drops what its queue has no room for, the active reporter
		// waits. (A nil channel is never ready.)
		interim := r.interim
		if len(r.queue) > 0 {
			interim = nil
		}
		select {
		case ev := <-r.queue:
			r.addQueued(ctx, &ev)
		case ev := <-interim:
			now := r.env.now()
			r.addFlow(ctx, &ev, now)
			r.drainInterim(ctx, r.cfg.MaxBatchSize, now)
		case <-flush.C:
			r.flush(ctx)
		case <-claimTick.C:
			r.addClaims(ctx)
			r.flush(ctx)
		case <-r.newAddresses:
			r.addNewClaims(ctx)
			r.flush(ctx)
		case <-ctx.Done():
			// Ingest has stopped: hand over what is queued and claim
			// the last partial interval.
			out := context.WithoutCancel(ctx)
			now := r.env.now()
			r.drain(out, cap(r.queue), now)
			r.drainInterim(out, cap(r.interim), now)
			r.addClaims(out)
			r.flush(out)
			return
		}
	}
}

// addQueued adds ev, taken from the ring's queue, and the events queued
// behind it to the batch.
func (r *flowReceiver) addQueued(ctx context.Context, ev *tracer.Event) {
	// One observation time for the events taken together: reading the
	// clock costs more than a record's share of the time they take.
	now := r.env.now()
	r.addFlow(ctx, ev, now)
	// The events queued behind it, taken without a select over every
	// channel, which costs more than the event's receive; a batch's worth
	// at most, so that the tickers are not kept waiting.
	r.drain(ctx, r.cfg.MaxBatchSize, now)
}

// drain adds up to limit queued events to the batch, observed at now,
// without waiting for any.
func (r *flowReceiver) drain(ctx context.Context, limit int, now time.Time) {
	for range limit {
		select {
		case ev := <-r.queue:
			r.addFlow(ctx, &ev, now)
		default:
			return
		}
	}
}

// interimQueueSize is the room for interim events between the active
// reporter and the emitter: enough that the reporter seldom waits on a
// quick pipeline; it waits when the pipeline is slow.
const interimQueueSize = 1024

// drainInterim adds up to limit queued interim events to the batch,
// observed at now, without waiting for any, while the ring's queue is
// empty: the ring's events come first.
func (r *flowReceiver) drainInterim(ctx context.Context, limit int, now time.Time) {
	for range limit {
		if len(r.queue) > 0 {
			return
		}
		select {
		case ev := <-r.interim:
			r.addFlow(ctx, &ev, now)
		default:
			return
		}
	}
}

// Why a flow record has no local owner, the "reason" attribute of
// ebpfflow_flows_unowned.
const (
	// unownedUnknownAddress: no ownership source covers the local address.
	unownedUnknownAddress = "unknown_address"
	// unownedOwnerChanged: the local address's owner changed, or the
	// receiver learnt it, after the flow started.
	unownedOwnerChanged = "owner_changed"
)

// addFlow converts ev into a record observed at observed, notes its local
// address for claims and flushes a full batch. The record names the local owner only if that
// owner held the address for the whole flow as far as the receiver knows:
// the processor applies the record's local side as a claim from the flow's
// start, and the owner looked up now may not be the one at that start.
func (r *flowReceiver) addFlow(ctx context.Context, ev *tracer.Event, observed time.Time) {
	if ev.Kind == tracer.KindConnected {
		// Not a flow: the moment to read the connection's translation.
		if r.nat != nil {
			r.nat.connected(ev)
		}
		return
	}
	var translated netip.AddrPort
	if r.nat != nil {
		translated = r.nat.translated(ev)
	}
	var owner *owners.Owner
	entry, owned := r.ownership.Lookup(ev.LocalAddr)
	switch {
	case !owned:
		r.telemetry.EbpfflowFlowsUnowned.Add(ctx, 1, r.unownedAttrs[unownedUnknownAddress])
	case !entry.HeldThroughout(ev.Start, ev.StartBoot, ev.StartKnown):
		// Claims still cover the part of the flow since the owner was
		// known.
		r.claims.Observe(ev.LocalAddr, entry, ev.Start, ev.End)
		r.telemetry.EbpfflowFlowsUnowned.Add(ctx, 1, r.unownedAttrs[unownedOwnerChanged])
	default:
		r.claims.Observe(ev.LocalAddr, entry, ev.Start, ev.End)
		o := entry.Owner()
		owner = &o
	}
	var workload *owners.Owner
	if r.kube != nil && ev.CgroupID != 0 {
		if w, ok := r.kube.Workload(ev.CgroupID); ok {
			workload = &w
		}
	}
	r.flows.putFlow(r.batch.append(), ev, owner, workload, translated, observed)
	r.batch.flows[flowState(ev.Kind)]++
	if r.batch.full() {
		r.flush(ctx)
	}
}

// addClaims closes the claim interval and adds its claims.
func (r *flowReceiver) addClaims(ctx context.Context) {
	now := r.env.now()
	r.appendClaims(ctx, r.claims.CloseInterval(now), now)
}

// addNewClaims adds claims for the addresses that got an owner since the
// last call, without waiting for the interval's close: peers hold flows
// to a new address until a claim covers it.
func (r *flowReceiver) addNewClaims(ctx context.Context) {
	now := r.env.now()
	r.appendClaims(ctx, r.claims.ClaimNew(now), now)
}

// appendClaims adds claims, made at now, to the batch.
func (r *flowReceiver) appendClaims(ctx context.Context, claims []localowner.Claim, now time.Time) {
	observed := pcommon.NewTimestampFromTime(now)
	for _, c := range claims {
		lr := r.batch.append()
		flowschema.PutClaim(lr, c.Claim)
		lr.SetObservedTimestamp(observed)
		r.batch.claims[c.Basis]++
		if r.batch.full() {
			r.flush(ctx)
		}
	}
}

// flush hands the batch to the pipeline. A refused batch is counted by the
// standard receiver metrics (refused log records) and logged; it is not
// retried, as the pipeline's exporters own retries.
func (r *flowReceiver) flush(ctx context.Context) {
	if r.batch.len() == 0 {
		return
	}
	logs, flows, claims := r.batch.take()
	n := logs.LogRecordCount()
	opCtx := r.obsrecv.StartLogsOp(ctx)
	err := r.next.ConsumeLogs(opCtx, logs)
	r.obsrecv.EndLogsOp(opCtx, metadata.Type.String(), n, err)
	if err != nil {
		r.settings.Logger.Warn("The pipeline refused flow records", zap.Int("records", n), zap.Error(err))
	}
	for state, count := range flows {
		if count > 0 {
			r.telemetry.EbpfflowFlowsEmitted.Add(ctx, int64(count), r.stateAttrs[state])
		}
	}
	for basis, count := range claims {
		if count > 0 {
			r.telemetry.EbpfflowClaimsEmitted.Add(ctx, int64(count), r.basisAttrs[basis])
		}
	}
}

// batch accumulates records under one resource and scope.
type batch struct {
	resource pcommon.Resource
	version  string
	max      int

	logs    plog.Logs
	records plog.LogRecordSlice
	// Counts by flow state and claim basis, for telemetry.
	flows, claims map[string]int
}

func newBatch(resource pcommon.Resource, version string, maxSize int) batch {
	b := batch{resource: resource, version: version, max: maxSize}
	b.reset()
	return b
}

func (b *batch) reset() {
	b.logs = plog.NewLogs()
	rl := b.logs.ResourceLogs().AppendEmpty()
	b.resource.CopyTo(rl.Resource())
	sl := rl.ScopeLogs().AppendEmpty()
	sl.Scope().SetName(metadata.ScopeName)
	sl.Scope().SetVersion(b.version)
	b.records = sl.LogRecords()
	b.flows = map[string]int{}
	b.claims = map[string]int{}
}

func (b *batch) append() plog.LogRecord { return b.records.AppendEmpty() }
func (b *batch) len() int               { return b.records.Len() }
func (b *batch) full() bool             { return b.records.Len() >= b.max }

// take returns the batch and its counts and starts a new one.
func (b *batch) take() (plog.Logs, map[string]int, map[string]int) {
	logs, flows, claims := b.logs, b.flows, b.claims
	b.reset()
	return logs, flows, claims
}
