{{/* Names, labels and the checks of the values. */}}

{{- define "flowattr.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flowattr.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "flowattr.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "flowattr.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The gateways' name, shorter than 63 bytes with its suffix. */}}
{{- define "flowattr.gatewayName" -}}
{{- printf "%s-gateway" (include "flowattr.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{- define "flowattr.serviceAccountName" -}}
{{- default (include "flowattr.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "flowattr.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "flowattr.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component (agent or gateway): pass (list . "agent"). */}}
{{- define "flowattr.selectorLabels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ include "flowattr.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "flowattr.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Whether claims cross the network, and so need mutual TLS. */}}
{{- define "flowattr.claimsCrossNetwork" -}}
{{- if or (eq .Values.mode "gateway") (and (eq .Values.mode "node") .Values.node.peers) }}true{{ end }}
{{- end }}

{{- define "flowattr.tlsEnabled" -}}
{{- if or .Values.tls.secretName .Values.tls.volume }}true{{ end }}
{{- end }}

{{/* validate fails the release with what to change. */}}
{{- define "flowattr.validate" -}}
{{- if not (has .Values.mode (list "node" "gateway")) }}
{{- fail (printf "mode: %q is not a mode; set node or gateway" .Values.mode) }}
{{- end }}
{{- if not (has .Values.ownership.senderIdentity (list "none" "certificate")) }}
{{- fail (printf "ownership.senderIdentity: %q is not allowed; set certificate or none" .Values.ownership.senderIdentity) }}
{{- end }}
{{- if and .Values.tls.secretName .Values.tls.volume }}
{{- fail "tls: set either tls.secretName or tls.volume, not both" }}
{{- end }}
{{- if and (include "flowattr.claimsCrossNetwork" .) (not (include "flowattr.tlsEnabled" .)) }}
{{- fail (printf "tls.secretName: mode %s sends claims between collectors, which takes mutual TLS; name a Secret with %s, %s and %s (or set tls.volume)" .Values.mode .Values.tls.caFile .Values.tls.certFile .Values.tls.keyFile) }}
{{- end }}
{{- if and (eq .Values.mode "gateway") (not .Values.gateway.kafka.brokers) }}
{{- fail "gateway.kafka.brokers: mode gateway shares claims between gateways through Kafka; list the brokers, e.g. [kafka-0.kafka:9092]" }}
{{- end }}
{{- if and (eq .Values.mode "gateway") (lt (int .Values.gateway.replicas) 1) }}
{{- fail "gateway.replicas: mode gateway needs at least 1 gateway" }}
{{- end }}
{{- range $i, $p := .Values.node.peers }}
{{- if not (regexMatch "^[^:/ ]+:[0-9]+$|^\\[[0-9a-fA-F:.]+\\]:[0-9]+$" (toString $p)) }}
{{- fail (printf "node.peers[%d]: %q is not host:port (an IPv6 address in brackets)" $i (toString $p)) }}
{{- end }}
{{- end }}
{{- end }}
