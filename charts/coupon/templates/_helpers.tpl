{{/*
Names, labels and the pod pieces shared by every component. Every define is prefixed "coupon.".
*/}}

{{- define "coupon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<chart>", or the release name when it already contains the chart name; 63 characters max. */}}
{{- define "coupon.fullname" -}}
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

{{/* Name of a component's objects: call with (dict "ctx" $ "component" "api"). */}}
{{- define "coupon.componentName" -}}
{{- printf "%s-%s" (include "coupon.fullname" .ctx | trunc (int (sub 62 (len .component)))) .component | trimSuffix "-" }}
{{- end }}

{{- define "coupon.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "coupon.labels" -}}
helm.sh/chart: {{ include "coupon.chart" . }}
{{ include "coupon.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: coupon
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "coupon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coupon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of a component's objects: (dict "ctx" $ "component" "api"). */}}
{{- define "coupon.componentLabels" -}}
{{ include "coupon.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector of a component's pods: (dict "ctx" $ "component" "api"). */}}
{{- define "coupon.componentSelectorLabels" -}}
{{ include "coupon.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "coupon.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "coupon.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "coupon.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "coupon.configMapName" -}}
{{- include "coupon.componentName" (dict "ctx" . "component" "config") }}
{{- end }}

{{/* The Secret every process reads its URLs and tokens from. */}}
{{- define "coupon.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- include "coupon.componentName" (dict "ctx" . "component" "secret") }}
{{- end }}
{{- end }}

{{/*
An environment variable's value: numbers as whole numbers (values files hold them as floats, which would print
1000000 as "1e+06"), everything else as text, lists joined by commas.
*/}}
{{- define "coupon.envValue" -}}
{{- if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) }}
{{- . | int64 | toString }}
{{- else if kindIs "slice" . }}
{{- join "," . }}
{{- else }}
{{- . | toString }}
{{- end }}
{{- end }}

{{/* A value is left out of the environment when it is "" or an empty list: the process then applies "unset". */}}
{{- define "coupon.isSet" -}}
{{- if not (or (and (kindIs "string" .) (eq . "")) (and (kindIs "slice" .) (empty .))) }}true{{ end }}
{{- end }}

{{/*
Plain settings: every config.* value but extraEnv, under the variable its name spells (persistRatePerSec ->
PERSIST_RATE_PER_SEC). src/config.ts's SETTINGS is the list of them; test/deploy checks that every setting has
its value here with the same default, so this helper names no variable itself.
*/}}
{{- define "coupon.configOwnData" -}}
{{- range $name, $value := omit .Values.config "extraEnv" }}
{{- if include "coupon.isSet" $value }}
{{ $name | snakecase | upper }}: {{ include "coupon.envValue" $value | quote }}
{{- end }}
{{- end }}
{{- if include "coupon.presaleOn" . }}
{{- if not .Values.config.presaleHpa }}
PRESALE_HPA: {{ include "coupon.componentName" (dict "ctx" $ "component" "api") | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when the worker raises the api HPA before each sale (config.presaleReplicas > 0). */}}
{{- define "coupon.presaleOn" -}}
{{- if gt (int .Values.config.presaleReplicas) 0 }}true{{ end }}
{{- end }}

{{/* Plain settings (ConfigMap data and the migration Job's env): the chart's own, then config.extraEnv. */}}
{{- define "coupon.configData" -}}
{{ include "coupon.configOwnData" . }}
{{- range $name, $value := .Values.config.extraEnv }}
{{ $name }}: {{ include "coupon.envValue" $value | quote }}
{{- end }}
{{- end }}

{{/*
ADMIN_TOKEN: secrets.adminToken, else the one this release's Secret already holds (so an upgrade keeps it), else
a new random one. Kept in .Values for the rest of the render, so every template of one install agrees on it.
*/}}
{{- define "coupon.adminToken" -}}
{{- if not (hasKey .Values "_adminToken") }}
{{- $token := .Values.secrets.adminToken }}
{{- if not $token }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "coupon.secretName" .) }}
{{- $token = (get (default dict $existing.data) "ADMIN_TOKEN") | default "" | b64dec }}
{{- end }}
{{- $_ := set .Values "_adminToken" (default (randAlphaNum 40) $token) }}
{{- end }}
{{- index .Values "_adminToken" }}
{{- end }}

{{/*
URLs and tokens (Secret data, base64): every secrets.* value but existingSecret, named like the plain settings.
Empty optional values are left out: the app treats unset as "off".
*/}}
{{- define "coupon.secretData" -}}
{{- range $name := list "redisUrl" "mysqlUrl" "postgresUrl" }}
{{- $_ := required (printf "secrets.%s is required (or set secrets.existingSecret)" $name) (get $.Values.secrets $name) }}
{{- end }}
{{- range $name, $value := omit .Values.secrets "existingSecret" }}
{{- if eq $name "adminToken" }}
{{- $value = include "coupon.adminToken" $ }}
{{- end }}
{{- if $value }}
{{ $name | snakecase | upper }}: {{ $value | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Restarts pods when their configuration changes. checksum/secret hashes the secrets.* values as given, not the
rendered Secret: a generated ADMIN_TOKEN (secrets.adminToken empty) is left out, so a render that cannot read the
release's Secret back (`helm template`, a GitOps sync) does not roll every pod for a new random token. With
secrets.existingSecret it hashes the Secret's data as `helm install`/`upgrade` read it (lookup; nothing under
`helm template`). Both hash secretRevision, which whoever rotates the Secret bumps.
*/}}
{{- define "coupon.checksumAnnotations" -}}
checksum/config: {{ include "coupon.configData" . | sha256sum }}
{{- if not .Values.secrets.existingSecret }}
checksum/secret: {{ omit .Values.secrets "existingSecret" | merge (dict "revision" (toString .Values.secretRevision)) | toJson | sha256sum }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace .Values.secrets.existingSecret }}
{{- $data := dig "data" dict (default dict $existing) }}
{{- if or $data (toString .Values.secretRevision) }}
checksum/secret: {{ dict "revision" (toString .Values.secretRevision) "data" $data | toJson | sha256sum }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Whole MiB of a memory quantity as Kubernetes writes it (512Mi, 1Gi, 500M, 536870912); fails on another form.
*/}}
{{- define "coupon.memoryMiB" -}}
{{- $q := kindIs "string" .quantity | ternary .quantity (printf "%.0f" (float64 .quantity)) }}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$" $q) }}
{{- fail (printf "%s %q: the chart sizes the heap from it and reads a number with Ki, Mi, Gi, Ti, k, M, G, T or none (bytes)" .path $q) }}
{{- end }}
{{- $units := dict "" 1.0 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 }}
{{- $number := regexReplaceAll "[A-Za-z]+$" $q "" }}
{{- $unit := regexReplaceAll "^[0-9.]+" $q "" }}
{{- divf (mulf (float64 $number) (get $units $unit)) 1048576 | floor | int64 }}
{{- end }}

{{/*
The heap flag of one container, sized from its own memory limit: (dict "ctx" $ "resources" .Values.api.resources
"path" "api.resources"). heapPercentOfMemoryLimit percent of the limit for V8's old space; nothing without a limit
or with the percentage 0 (node then sizes the heap itself: about half of a 512Mi limit, but 259 MiB under 256Mi).
*/}}
{{- define "coupon.heapFlag" -}}
{{- $percent := int .ctx.Values.heapPercentOfMemoryLimit }}
{{- $limit := dig "limits" "memory" "" (default dict .resources) }}
{{- if and $percent $limit }}
{{- $mib := include "coupon.memoryMiB" (dict "quantity" $limit "path" (printf "%s.limits.memory" .path)) | int64 }}
{{- printf "--max-old-space-size=%d" (div (mul $mib $percent) 100) }}
{{- end }}
{{- end }}

{{/*
NODE_OPTIONS of a container that gets the heap flag: config.extraEnv's, the component's extraEnv's, then the flag.
(dict "ctx" $ "values" .Values.api "heap" <coupon.heapFlag>); values is empty for the migrations Job.
*/}}
{{- define "coupon.nodeOptions" -}}
{{- $own := dig "extraEnv" "NODE_OPTIONS" "" (default dict .values) }}
{{- compact (list (get .ctx.Values.config.extraEnv "NODE_OPTIONS") $own .heap) | join " " }}
{{- end }}

{{/* Container securityContext plus the writable /tmp every container of the chart mounts. */}}
{{- define "coupon.containerSecurity" -}}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}

{{- define "coupon.tmpVolume" -}}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
{{- end }}

{{/* Scheduling of a component: (dict "ctx" $ "component" "api" "values" .Values.api). */}}
{{- define "coupon.scheduling" -}}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml .values.topologySpreadConstraints | nindent 2 }}
{{- else if .ctx.Values.topologySpread.enabled }}
topologySpreadConstraints:
  - maxSkew: {{ .ctx.Values.topologySpread.maxSkew }}
    topologyKey: {{ .ctx.Values.topologySpread.topologyKey }}
    whenUnsatisfiable: {{ .ctx.Values.topologySpread.whenUnsatisfiable }}
    # Nodes whose taints the pod does not tolerate are not counted (a tainted node would otherwise hold the skew
    # and, with DoNotSchedule, block every new pod), and each rollout's ReplicaSet is spread on its own (old pods
    # going away do not skew the new ones).
    nodeTaintsPolicy: Honor
    matchLabelKeys: [pod-template-hash]
    labelSelector:
      matchLabels:
        {{- include "coupon.componentSelectorLabels" (dict "ctx" .ctx "component" .component) | nindent 8 }}
{{- end }}
{{- end }}

{{/*
Environment of a long-running component: ConfigMap, Secret, PORT, NODE_OPTIONS with the heap flag sized from the
component's memory limit, and the component's extraEnv: (dict "ctx" $ "component" "api" "values" .Values.api).
*/}}
{{- define "coupon.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "coupon.configMapName" .ctx }}
  - secretRef:
      name: {{ include "coupon.secretName" .ctx }}
env:
  - name: PORT
    value: {{ .values.port | quote }}
{{- if hasKey .values "opsPort" }}
  - name: OPS_PORT
    value: {{ .values.opsPort | quote }}
{{- end }}
{{- $heap := include "coupon.heapFlag" (dict "ctx" .ctx "resources" .values.resources "path" (printf "%s.resources" .component)) }}
{{- if $heap }}
  - name: NODE_OPTIONS
    value: {{ include "coupon.nodeOptions" (dict "ctx" .ctx "values" .values "heap" $heap) | quote }}
{{- end }}
{{- range $name, $value := .values.extraEnv }}
{{- if not (and $heap (eq $name "NODE_OPTIONS")) }}
  - name: {{ $name }}
    value: {{ include "coupon.envValue" $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* autoscaling/v2 metrics for CPU and optional memory utilisation. */}}
{{- define "coupon.hpaMetrics" -}}
metrics:
  - type: Resource
    resource:
      name: cpu
      target:
        type: Utilization
        averageUtilization: {{ .targetCPUUtilizationPercentage }}
{{- if .targetMemoryUtilizationPercentage }}
  - type: Resource
    resource:
      name: memory
      target:
        type: Utilization
        averageUtilization: {{ .targetMemoryUtilizationPercentage }}
{{- end }}
{{- with .behavior }}
behavior:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
