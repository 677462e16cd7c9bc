{{/*
The collector configurations, after testdata/fleet/{node,agent,gateway}.yaml
(docs/deployment.md), with the kubernetes ownership source on the nodes.
*/}}

{{- define "flowattr.tlsDir" -}}/etc/flowattr/tls{{- end }}

{{/*
The TLS settings of a client that presents this collector's certificate.
The certificate and key are read again every tls.reloadInterval, at the
next handshake, so that rotated files are used; ca_file is read once.
*/}}
{{- define "flowattr.tlsClient" -}}
ca_file: {{ printf "%s/%s" (include "flowattr.tlsDir" .) .Values.tls.caFile | quote }}
cert_file: {{ printf "%s/%s" (include "flowattr.tlsDir" .) .Values.tls.certFile | quote }}
key_file: {{ printf "%s/%s" (include "flowattr.tlsDir" .) .Values.tls.keyFile | quote }}
reload_interval: {{ .Values.tls.reloadInterval }}
{{- end }}

{{/*
The TLS settings of a server that requires a client certificate from the
CA. The certificate and key are read again every tls.reloadInterval, and
the CA file whenever it changes (checked at most once a second, at
handshakes).
*/}}
{{- define "flowattr.tlsServer" -}}
cert_file: {{ printf "%s/%s" (include "flowattr.tlsDir" .) .Values.tls.certFile | quote }}
key_file: {{ printf "%s/%s" (include "flowattr.tlsDir" .) .Values.tls.keyFile | quote }}
reload_interval: {{ .Values.tls.reloadInterval }}
client_ca_file: {{ printf "%s/%s" (include "flowattr.tlsDir" .) .Values.tls.caFile | quote }}
client_ca_file_reload: true
{{- end }}

{{- define "flowattr.healthCheck" -}}
health_check:
  endpoint: {{ printf "%s:%v" .Values.listenHost .Values.ports.health | quote }}
{{- end }}

{{- define "flowattr.telemetry" -}}
metrics:
  level: detailed
  readers:
    - pull:
        exporter:
          prometheus:
            host: {{ .Values.listenHost | trimPrefix "[" | trimSuffix "]" | quote }}
            port: {{ .Values.ports.metrics }}
{{- end }}

{{/* The exporter of attributed flows: OTLP/gRPC, or debug without an endpoint. */}}
{{- define "flowattr.flowsExporterName" -}}
{{- if .Values.flows.endpoint }}otlp_grpc/flows{{ else }}debug{{ end }}
{{- end }}

{{- define "flowattr.flowsExporter" -}}
{{- if .Values.flows.endpoint }}
otlp_grpc/flows:
  endpoint: {{ .Values.flows.endpoint | quote }}
  {{- with .Values.flows.tls }}
  tls:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.flows.headers }}
  headers:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  sending_queue:
    enabled: true
  retry_on_failure:
    enabled: true
{{- else }}
# One line per flow record: its attributes, the peer's owner among them.
debug:
  verbosity: normal
{{- end }}
{{- end }}

{{/* The ebpfflow receiver of every node. */}}
{{- define "flowattr.ebpfflow" -}}
ebpfflow:
  # The node name: the sender of this node's claims.
  sender: ${env:K8S_NODE_NAME}
  claim_interval: {{ .Values.receiver.claimInterval }}
  active_interval: {{ .Values.receiver.activeInterval }}
  filter:
    exclude_loopback: true
  ownership:
    precedence: [kubernetes, static]
    static:
      host_addresses: {{ .Values.receiver.hostAddresses }}
    kubernetes:
      enabled: true
      services: {{ .Values.receiver.kubernetes.services }}
      restrict_to_pod_cidrs: {{ .Values.receiver.kubernetes.restrictToPodCIDRs }}
      # The host's cgroup hierarchy, where hostNetwork pods are found.
      cgroup_root: /host/sys/fs/cgroup
      {{- with .Values.receiver.kubernetes.extract }}
      extract:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  {{- with .Values.receiver.nat.serviceCIDRs }}
  nat:
    service_cidrs:
      {{- toYaml . | nindent 6 }}
  {{- end }}
{{- end }}

{{/* The settings every processor sharing the store must agree on. */}}
{{- define "flowattr.storeSettings" -}}
max_wait: {{ .Values.ownership.maxWait }}
max_pending: {{ .Values.ownership.maxPending }}
merge_gap: {{ .Values.ownership.mergeGap }}
clock_skew: {{ .Values.ownership.clockSkew }}
retention: {{ .Values.ownership.retention }}
max_keys: {{ .Values.ownership.maxKeys }}
{{- with .Values.ownership.workloadCIDRs }}
workload_cidrs:
  {{- toYaml . | nindent 2 }}
{{- end }}
workload_host_addresses: {{ .Values.ownership.workloadHostAddresses }}
{{- with .Values.ownership.senders }}
senders:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Mode node: every node attributes its flows; claims go to every peer. */}}
{{- define "flowattr.nodeConfig" -}}
{{- $peers := .Values.node.peers }}
extensions:
  {{- include "flowattr.healthCheck" . | nindent 2 }}
receivers:
  {{- include "flowattr.ebpfflow" . | nindent 2 }}
  {{- if $peers }}
  otlp/claims:
    protocols:
      grpc:
        endpoint: {{ printf "%s:%v" .Values.listenHost .Values.ports.claims | quote }}
        tls:
          {{- include "flowattr.tlsServer" . | nindent 10 }}
  {{- end }}
processors:
  # This node's receiver: its claims and its flows' local sides are trusted.
  ownership:
    keep_claims: false
    sender_identity: none
    {{- include "flowattr.storeSettings" . | nindent 4 }}
  {{- if $peers }}
  # The peers' claims, into the same store.
  ownership/peers:
    store: ownership
    keep_claims: false
    sender_identity: {{ .Values.ownership.senderIdentity }}
    {{- include "flowattr.storeSettings" . | nindent 4 }}
  # This node's claims only, checked, for the peers.
  ownership/claims-out:
    keep_claims: true
    keep_flows: false
    apply_local_claims: false
    max_wait: 0s
    retention: 2m
    max_keys: 100000
  {{- end }}
exporters:
  {{- include "flowattr.flowsExporter" . | nindent 2 }}
  {{- range $i, $peer := $peers }}
  otlp_grpc/peer-{{ add1 $i }}:
    endpoint: {{ $peer | quote }}
    timeout: 10s
    tls:
      {{- include "flowattr.tlsClient" $ | nindent 6 }}
    # A peer that is down gets the claims it missed when it is back.
    sending_queue:
      enabled: true
      queue_size: 1000
    retry_on_failure:
      enabled: true
      initial_interval: 500ms
      max_interval: 2s
      max_elapsed_time: 5m
  {{- end }}
  {{- if $peers }}
  nop: {}
  {{- end }}
service:
  extensions: [health_check]
  telemetry:
    {{- include "flowattr.telemetry" . | nindent 4 }}
  pipelines:
    logs/flows:
      receivers: [ebpfflow]
      processors: [ownership]
      exporters: [{{ include "flowattr.flowsExporterName" . }}]
    {{- if $peers }}
    logs/claims-out:
      receivers: [ebpfflow]
      processors: [ownership/claims-out]
      exporters:
        {{- range $i, $peer := $peers }}
        - otlp_grpc/peer-{{ add1 $i }}
        {{- end }}
    logs/claims-in:
      receivers: [otlp/claims]
      processors: [ownership/peers]
      exporters: [nop]
    {{- end }}
{{- end }}

{{/* Mode gateway, on the nodes: capture, and send flows and claims to the gateways. */}}
{{- define "flowattr.agentConfig" -}}
extensions:
  {{- include "flowattr.healthCheck" . | nindent 2 }}
receivers:
  {{- include "flowattr.ebpfflow" . | nindent 2 }}
processors:
  memory_limiter:
    check_interval: 1s
    limit_percentage: 80
    spike_limit_percentage: 20
exporters:
  # Every gateway behind the headless Service, round robin: any gateway
  # will do, as the gateways share claims through Kafka.
  otlp_grpc/gateways:
    endpoint: {{ printf "dns:///%s.%s.svc.%s:%v" (include "flowattr.gatewayName" .) .Release.Namespace .Values.clusterDomain .Values.gateway.port | quote }}
    balancer_name: round_robin
    timeout: 10s
    tls:
      {{- include "flowattr.tlsClient" . | nindent 6 }}
    sending_queue:
      enabled: true
      queue_size: 1000
    retry_on_failure:
      enabled: true
      initial_interval: 500ms
      max_interval: 5s
      max_elapsed_time: 5m
service:
  extensions: [health_check]
  telemetry:
    {{- include "flowattr.telemetry" . | nindent 4 }}
  pipelines:
    logs:
      receivers: [ebpfflow]
      processors: [memory_limiter]
      exporters: [otlp_grpc/gateways]
{{- end }}

{{/* Mode gateway, on the gateways: attribute; share claims through Kafka. */}}
{{- define "flowattr.gatewayConfig" -}}
{{- $kafka := .Values.gateway.kafka }}
extensions:
  {{- include "flowattr.healthCheck" . | nindent 2 }}
receivers:
  otlp/agents:
    protocols:
      grpc:
        endpoint: {{ printf "%s:%v" .Values.listenHost .Values.gateway.port | quote }}
        tls:
          {{- include "flowattr.tlsServer" . | nindent 10 }}
  # Every gateway reads the whole topic in a consumer group of its own,
  # new at every start of the process: flowattr-<pod name>-<UUID>, the
  # UUID read from /proc/sys/kernel/random/uuid when the configuration is
  # loaded (the file provider keeps its trailing newline, which ends the
  # group's name). A new group has no committed offset, so the gateway
  # reads from the earliest message and a gateway that starts, or whose
  # container restarts, rebuilds its store from the topic. Each start
  # leaves its group behind, empty; Kafka drops its offsets after
  # offsets.retention.minutes. The offsets committed after each fetch let
  # a consumer that rejoins its group (after a broker outage) go on where
  # it was.
  kafka/claims:
    brokers:
      {{- toYaml $kafka.brokers | nindent 6 }}
    group_id: flowattr-${env:K8S_POD_NAME}-${file:/proc/sys/kernel/random/uuid}
    client_id: flowattr-${env:K8S_POD_NAME}
    initial_offset: earliest
    autocommit:
      enable: false
    logs:
      topics: [{{ $kafka.topic | quote }}]
      encoding: otlp_proto
processors:
  # The nodes' claims arrive over mutual TLS; their flows' local sides
  # would reach only this gateway, so they are not claims here.
  ownership:
    keep_claims: false
    apply_local_claims: false
    sender_identity: {{ .Values.ownership.senderIdentity }}
    {{- include "flowattr.storeSettings" . | nindent 4 }}
  # The claims every gateway published, into the same store: the topic
  # is trusted (its ACLs are the boundary).
  ownership/topic:
    store: ownership
    keep_claims: false
    apply_local_claims: false
    sender_identity: none
    {{- include "flowattr.storeSettings" . | nindent 4 }}
  # The nodes' claims only, checked, before they are published.
  ownership/claims-out:
    keep_claims: true
    keep_flows: false
    apply_local_claims: false
    max_wait: 0s
    retention: {{ .Values.ownership.retention }}
    max_keys: {{ .Values.ownership.maxKeys }}
    sender_identity: {{ .Values.ownership.senderIdentity }}
    {{- with .Values.ownership.senders }}
    senders:
      {{- toYaml . | nindent 6 }}
    {{- end }}
exporters:
  {{- include "flowattr.flowsExporter" . | nindent 2 }}
  kafka/claims:
    brokers:
      {{- toYaml $kafka.brokers | nindent 6 }}
    client_id: flowattr-${env:K8S_POD_NAME}
    logs:
      topic: {{ $kafka.topic | quote }}
      encoding: otlp_proto
    sending_queue:
      enabled: true
      sizer: items
      queue_size: 100000
    retry_on_failure:
      enabled: true
      initial_interval: 500ms
      max_interval: 2s
      max_elapsed_time: 15m
  nop: {}
service:
  extensions: [health_check]
  telemetry:
    {{- include "flowattr.telemetry" . | nindent 4 }}
  pipelines:
    logs/flows:
      receivers: [otlp/agents]
      processors: [ownership]
      exporters: [{{ include "flowattr.flowsExporterName" . }}]
    logs/claims-out:
      receivers: [otlp/agents]
      processors: [ownership/claims-out]
      exporters: [kafka/claims]
    logs/claims-in:
      receivers: [kafka/claims]
      processors: [ownership/topic]
      exporters: [nop]
{{- end }}

{{/*
render renders the configuration named by (list . "flowattr.nodeConfig"
overrides) and merges the overrides over it.
*/}}
{{- define "flowattr.render" -}}
{{- $ := index . 0 }}
{{- $cfg := include (index . 1) $ | fromYaml }}
{{- if hasKey $cfg "Error" }}
{{- fail (printf "rendering %s: %s" (index . 1) $cfg.Error) }}
{{- end }}
{{- toYaml (mustMergeOverwrite $cfg (deepCopy (index . 2))) }}
{{- end }}

{{/* The node collectors' configuration. */}}
{{- define "flowattr.agentConfigRendered" -}}
{{- $name := ternary "flowattr.nodeConfig" "flowattr.agentConfig" (eq .Values.mode "node") }}
{{- include "flowattr.render" (list . $name .Values.agent.config) }}
{{- end }}
