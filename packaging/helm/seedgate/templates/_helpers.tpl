{{- define "seedgate.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "seedgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "seedgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "seedgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "seedgate.labels" -}}
{{ include "seedgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "seedgate.secretName" -}}
{{- default (printf "%s-token" (include "seedgate.fullname" .)) .Values.apiToken.existingSecret -}}
{{- end -}}

{{- define "seedgate.hasToken" -}}
{{- if or .Values.apiToken.existingSecret .Values.apiToken.value -}}true{{- end -}}
{{- end -}}

{{- define "seedgate.config" -}}
[server]
listen = {{ printf "0.0.0.0:%d" (int .Values.ports.gateway) | quote }}
{{- if include "seedgate.hasToken" . }}
api_token = "file:/etc/seedgate/secret/api-token"
{{- end }}

[telemetry]
log_format = {{ .Values.logFormat | quote }}

[seed_peer]
upload_listen = {{ printf "0.0.0.0:%d" (int .Values.ports.upload) | quote }}
piece_listen = {{ printf "0.0.0.0:%d" (int .Values.ports.piece) | quote }}
scheduler_cluster_id = {{ int .Values.dragonfly.schedulerClusterId }}
{{- with .Values.dragonfly.idc }}
idc = {{ . | quote }}
{{- end }}
{{- with .Values.dragonfly.location }}
location = {{ . | quote }}
{{- end }}
{{- if .Values.dragonfly.schedulers }}
schedulers = {{ toJson .Values.dragonfly.schedulers }}
{{- else if .Values.scheduler.enabled }}
{{- $full := include "seedgate.fullname" . }}
{{- $port := int .Values.scheduler.port }}
schedulers = [{{ range $i, $_ := until (int .Values.replicaCount) }}{{ if $i }}, {{ end }}{{ printf "http://%s-%d.%s-headless:%d" $full $i $full $port | quote }}{{ end }}]
{{- else }}
{{- fail "set dragonfly.schedulers, or scheduler.enabled for the built-in scheduler" }}
{{- end }}
{{- if .Values.scheduler.enabled }}

[scheduler]
listen = {{ printf "0.0.0.0:%d" (int .Values.scheduler.port) | quote }}
{{- end }}
{{- range $name, $origin := .Values.origins }}

[origins.{{ $name }}]
{{- range $key, $value := $origin }}
{{- if ne $key "config" }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}
{{- with $origin.config }}
[origins.{{ $name }}.config]
{{- range $key, $value := . }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}
{{- end }}

{{ .Values.extraConfig }}
{{- end -}}
