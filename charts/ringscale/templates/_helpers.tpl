{{/* Name of the chart. */}}
{{- define "ringscale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "ringscale.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Headless Service of the replicas (peers). */}}
{{- define "ringscale.peers" -}}
{{- printf "%s-peers" (include "ringscale.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Service of the external metrics API. */}}
{{- define "ringscale.metricsService" -}}
{{- printf "%s-metrics-api" (include "ringscale.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Secret names. */}}
{{- define "ringscale.metricsTlsSecret" -}}
{{- printf "%s-metrics-api-tls" (include "ringscale.fullname" .) }}
{{- end }}
{{- define "ringscale.peerTlsSecret" -}}
{{- printf "%s-peer-tls" (include "ringscale.fullname" .) }}
{{- end }}

{{/* Name of the ring (Leases and ConfigMap). */}}
{{- define "ringscale.ring" -}}
{{- default (include "ringscale.fullname" .) .Values.ring.name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "ringscale.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ringscale.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ringscale
{{- end }}

{{/* Labels that select the replicas. */}}
{{- define "ringscale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ringscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The container image. */}}
{{- define "ringscale.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The cert-manager issuer of the serving and peer certificates. */}}
{{- define "ringscale.issuerRef" -}}
{{- if .Values.certificates.certManager.issuerRef.name }}
name: {{ .Values.certificates.certManager.issuerRef.name }}
kind: {{ default "Issuer" .Values.certificates.certManager.issuerRef.kind }}
group: cert-manager.io
{{- else }}
name: {{ include "ringscale.fullname" . }}-ca
kind: Issuer
group: cert-manager.io
{{- end }}
{{- end }}
