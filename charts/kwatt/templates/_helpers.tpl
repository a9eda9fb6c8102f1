{{/* The chart's name, shortened to a DNS label. */}}
{{- define "kwatt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The objects' base name: the release name, with the chart's name unless it has it. */}}
{{- define "kwatt.fullname" -}}
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

{{- define "kwatt.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kwatt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kwatt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kwatt.labels" -}}
helm.sh/chart: {{ include "kwatt.chart" . }}
app.kubernetes.io/name: {{ include "kwatt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kwatt
{{- end }}

{{- define "kwatt.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kwatt.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's image, its tag defaulting to the chart's appVersion. */}}
{{- define "kwatt.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "kwatt.sidecarImage" -}}
{{- printf "%s:%s" .Values.sidecar.image.repository (default .Chart.AppVersion .Values.sidecar.image.tag) }}
{{- end }}

{{/* What the values cannot say in a schema, checked once, with a sentence each. */}}
{{- define "kwatt.validate" -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not (and .Values.metrics.enabled .Values.metrics.service.enabled)) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled and metrics.service.enabled: a ServiceMonitor scrapes the metrics Service." }}
{{- end }}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) (int .Values.health.port)) }}
{{- fail (printf "metrics.port and health.port must differ (both are %v)." .Values.metrics.port) }}
{{- end }}
{{- if eq (int .Values.sidecar.port) (int .Values.sidecar.metricsPort) }}
{{- fail (printf "sidecar.port and sidecar.metricsPort must differ (both are %v)." .Values.sidecar.port) }}
{{- end }}
{{- end }}
