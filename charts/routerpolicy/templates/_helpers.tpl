{{/* The release's full name: the release name when it contains the chart name. */}}
{{- define "routerpolicy.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "routerpolicy.serviceAccountName" -}}
{{- default (include "routerpolicy.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "routerpolicy.labels" -}}
app.kubernetes.io/name: routerpolicy
app.kubernetes.io/part-of: routerpolicy
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "routerpolicy.selectorLabels" -}}
app.kubernetes.io/name: routerpolicy
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "routerpolicy.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Pod and container security settings, shared by the operator and the gateway; equal to deploy/'s (tested). */}}
{{- define "routerpolicy.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "routerpolicy.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end -}}
