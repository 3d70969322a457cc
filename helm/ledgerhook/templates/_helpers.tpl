{{/*
Chart name, overridable with nameOverride.
*/}}
{{- define "ledgerhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name prefix of every resource: "<release>-<chart>" unless the release name already
contains the chart name, or fullnameOverride. At most 63 characters (DNS label).
*/}}
{{- define "ledgerhook.fullname" -}}
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

{{/*
Name of one component's resources: "<fullname>-<component>". Call with (dict "ctx" $ "component" "gateway").
*/}}
{{- define "ledgerhook.componentName" -}}
{{- printf "%s-%s" (include "ledgerhook.fullname" .ctx | trunc 54 | trimSuffix "-") .component }}
{{- end }}

{{/*
"<chart>-<version>" for the helm.sh/chart label.
*/}}
{{- define "ledgerhook.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels. Call with (dict "ctx" $ "component" "gateway"); an empty component selects nothing more.
*/}}
{{- define "ledgerhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ledgerhook.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/*
Standard labels. Call with (dict "ctx" $ "component" "gateway") or (dict "ctx" $).
*/}}
{{- define "ledgerhook.labels" -}}
helm.sh/chart: {{ include "ledgerhook.chart" .ctx }}
{{ include "ledgerhook.selectorLabels" . }}
app.kubernetes.io/version: {{ default .ctx.Chart.AppVersion .ctx.Values.image.tag | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/part-of: ledgerhook
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{/*
The container image: repository:tag (tag defaults to appVersion), with @digest when one is set.
*/}}
{{- define "ledgerhook.image" -}}
{{- $ref := printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $ref .Values.image.digest }}
{{- else }}
{{- $ref }}
{{- end }}
{{- end }}

{{/*
ServiceAccount of the gateway and worker pods.
*/}}
{{- define "ledgerhook.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ledgerhook.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
ServiceAccount of the migration hook, which runs before the chart's own ServiceAccount exists.
*/}}
{{- define "ledgerhook.migrateServiceAccountName" -}}
{{- if .Values.migrate.serviceAccountName }}
{{- .Values.migrate.serviceAccountName }}
{{- else if not .Values.serviceAccount.create }}
{{- default "default" .Values.serviceAccount.name }}
{{- else }}
{{- "default" }}
{{- end }}
{{- end }}

{{/*
Name of the Secret loaded by the gateway and worker: existingSecret, else the chart-created one when
`secrets` is not empty, else nothing.
*/}}
{{- define "ledgerhook.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else if .Values.secrets }}
{{- include "ledgerhook.fullname" . }}
{{- end }}
{{- end }}

{{/*
Name of the Secret loaded by the migration hook. A chart-created Secret does not exist yet when a
pre-install hook runs, so the hook gets its own copy, itself a hook.
*/}}
{{- define "ledgerhook.migrateSecretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else if .Values.secrets }}
{{- include "ledgerhook.componentName" (dict "ctx" . "component" "migrate") }}
{{- end }}
{{- end }}

{{/*
A setting's value as an environment string: whole numbers without an exponent (1048576, not 1.048576e+06).
*/}}
{{- define "ledgerhook.envValue" -}}
{{- if and (kindIs "float64" .) (eq (floor .) .) }}
{{- int64 . | toString }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
Seconds between SIGTERM and SIGKILL: longer than the drain plus the in-flight timeout.
*/}}
{{- define "ledgerhook.terminationGracePeriodSeconds" -}}
{{- $s := .Values.shutdown }}
{{- add (ceil $s.drainSeconds | int) (ceil $s.timeoutSeconds | int) ($s.marginSeconds | int) }}
{{- end }}

{{/*
Environment variables set directly on every Ledgerhook container (they win over envFrom).
*/}}
{{- define "ledgerhook.env" -}}
- name: LEDGERHOOK_PORT
  value: {{ include "ledgerhook.envValue" .Values.gateway.port | quote }}
- name: LEDGERHOOK_SHUTDOWN_DRAIN_SECONDS
  value: {{ include "ledgerhook.envValue" .Values.shutdown.drainSeconds | quote }}
- name: LEDGERHOOK_SHUTDOWN_TIMEOUT_SECONDS
  value: {{ include "ledgerhook.envValue" .Values.shutdown.timeoutSeconds | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
envFrom of the gateway and worker: the ConfigMap, and the Secret when there is one.
*/}}
{{- define "ledgerhook.envFrom" -}}
- configMapRef:
    name: {{ include "ledgerhook.fullname" . }}
{{- with include "ledgerhook.secretName" . }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end }}

{{/*
Volumes of every pod: a writable /tmp (the root filesystem is read-only) and extraVolumes.
*/}}
{{- define "ledgerhook.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "ledgerhook.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Pod annotations that roll the pods when their configuration changes.
*/}}
{{- define "ledgerhook.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if and (not .Values.existingSecret) .Values.secrets }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{/*
Topology spread constraints with labelSelector defaulting to the component's pods.
Call with (dict "ctx" $ "component" "gateway" "constraints" .Values.gateway.topologySpreadConstraints).
*/}}
{{- define "ledgerhook.topologySpreadConstraints" -}}
{{- $selector := include "ledgerhook.selectorLabels" (dict "ctx" .ctx "component" .component) | fromYaml }}
{{- range .constraints }}
- {{ merge (deepCopy .) (dict "labelSelector" (dict "matchLabels" $selector)) | toYaml | indent 2 | trim }}
{{- end }}
{{- end }}
