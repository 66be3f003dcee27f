{{/* Name of every object: the release name, with the chart name unless already in it. */}}
{{- define "agent-hints-worker.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "agent-hints-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "agent-hints-worker.labels" -}}
{{ include "agent-hints-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* state_cache_bytes: stateCachePercent of the memory limit (in Mi or Gi), unless set in env. */}}
{{- define "agent-hints-worker.stateCacheBytes" -}}
{{- $limit := toString (dig "limits" "memory" "" .Values.resources) -}}
{{- $bytes := 0 -}}
{{- if hasSuffix "Gi" $limit -}}
{{- $bytes = mul (atoi (trimSuffix "Gi" $limit)) 1073741824 -}}
{{- else if hasSuffix "Mi" $limit -}}
{{- $bytes = mul (atoi (trimSuffix "Mi" $limit)) 1048576 -}}
{{- else -}}
{{- fail (printf "resources.limits.memory must be set in Mi or Gi (got %q): the worker's state cache is sized from it" $limit) -}}
{{- end -}}
{{- if le $bytes 0 -}}
{{- fail (printf "resources.limits.memory %q is not a positive size" $limit) -}}
{{- end -}}
{{- div (mul $bytes .Values.stateCachePercent) 100 -}}
{{- end -}}
