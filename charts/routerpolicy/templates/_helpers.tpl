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

{{/* The image: repository@digest when a digest is given (it wins over the tag), else repository:tag. */}}
{{- define "routerpolicy.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The scheduling knobs of a pod, shared by the operator and the gateway. Takes a dict:
values (the operator's top-level values or .Values.gateway) and selector (the pod's selector
labels, given to topology spread constraints that have no labelSelector).
*/}}
{{- define "routerpolicy.scheduling" -}}
{{- $v := .values -}}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $v.topologySpreadConstraints }}
topologySpreadConstraints:
{{- range $v.topologySpreadConstraints }}
  {{- $c := deepCopy . }}
  {{- if not $c.labelSelector }}
  {{- $_ := set $c "labelSelector" (dict "matchLabels" $.selector) }}
  {{- end }}
  - {{- toYaml $c | nindent 4 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* A PodDisruptionBudget's budget: minAvailable when set, else maxUnavailable. */}}
{{- define "routerpolicy.disruptionBudget" -}}
{{- if not (kindIs "invalid" .minAvailable) }}
minAvailable: {{ .minAvailable }}
{{- else }}
maxUnavailable: {{ .maxUnavailable }}
{{- end }}
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

{{/*
The Secret the gateway serves TLS with: gateway.tls.secretName, else with cert-manager
`<fullname>-gateway-tls`; empty for plain HTTP.
*/}}
{{- define "routerpolicy.gatewayTLSSecret" -}}
{{- $tls := .Values.gateway.tls -}}
{{- if $tls.secretName -}}
{{- $tls.secretName -}}
{{- else if $tls.certManager.enabled -}}
{{- printf "%s-gateway-tls" (include "routerpolicy.fullname" .) -}}
{{- end -}}
{{- end }}
