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

{{/*
The replicas' rules on the objects they watch and write, granted cluster-wide (a ClusterRole)
or in each watched namespace (Roles).
*/}}
{{- define "ringscale.watchRules" -}}
# What triggers refer to, read from watches (TriggerAuthentication secrets, env of targets).
- apiGroups: [""]
  resources: [secrets, configmaps]
  verbs: [list, watch]
# ScaledJobs' pending Pods.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# Scale targets' replica counts and pod templates.
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [list, watch]
# Any scale target with a /scale subresource (Deployments, StatefulSets, Argo Rollouts, ...).
- apiGroups: ["*"]
  resources: ["*/scale"]
  verbs: [get, patch]
# The HPA of each ScaledObject.
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, watch, create, update, delete]
# ScaledJobs' Jobs.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, delete]
# KEDA's kinds: finalizers and the owner's stamp (patch), status (update).
- apiGroups: [keda.sh]
  resources: [scaledobjects, scaledjobs]
  verbs: [list, watch, patch]
- apiGroups: [keda.sh]
  resources: [scaledobjects/status, scaledjobs/status]
  verbs: [update]
- apiGroups: [keda.sh]
  resources: [triggerauthentications]
  verbs: [list, watch]
# Events on ScaledObjects and ScaledJobs (created once each; no series patches).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
{{- end }}
