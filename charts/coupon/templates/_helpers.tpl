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

{{/* Plain settings the chart renders from its own config.* values. */}}
{{- define "coupon.configOwnData" -}}
LOG_LEVEL: {{ .Values.config.logLevel | quote }}
PERSIST_RATE_PER_SEC: {{ .Values.config.persistRatePerSec | quote }}
PERSIST_BATCH_SIZE: {{ .Values.config.persistBatchSize | quote }}
CLAIM_IDLE_MS: {{ .Values.config.claimIdleMs | quote }}
MAX_DELIVERIES: {{ .Values.config.maxDeliveries | quote }}
SHUTDOWN_DRAIN_MS: {{ .Values.config.shutdownDrainMs | quote }}
RECONCILE_CRON: {{ .Values.config.reconcileCron | quote }}
REDIS_SOCKET_TIMEOUT_MS: {{ .Values.config.redisSocketTimeoutMs | quote }}
GATE_MIN_REPLICAS: {{ .Values.config.gateMinReplicas | quote }}
GATE_REPLICA_TIMEOUT_MS: {{ .Values.config.gateReplicaTimeoutMs | quote }}
{{- with .Values.config.redisSentinels }}
REDIS_SENTINELS: {{ join "," . | quote }}
{{- end }}
{{- with .Values.config.redisSentinelMaster }}
REDIS_SENTINEL_MASTER: {{ . | quote }}
{{- end }}
{{- with .Values.config.authJwtAudience }}
AUTH_JWT_AUDIENCE: {{ . | quote }}
{{- end }}
{{- with .Values.config.authJwtIssuer }}
AUTH_JWT_ISSUER: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Plain settings (ConfigMap data and the migration Job's env): the chart's own, then config.extraEnv. */}}
{{- define "coupon.configData" -}}
{{ include "coupon.configOwnData" . }}
{{- range $name, $value := .Values.config.extraEnv }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* URLs and tokens (Secret data, base64). Empty optional values are left out: the app treats unset as "off". */}}
{{- define "coupon.secretData" -}}
REDIS_URL: {{ required "secrets.redisUrl is required (or set secrets.existingSecret)" .Values.secrets.redisUrl | b64enc | quote }}
MYSQL_URL: {{ required "secrets.mysqlUrl is required (or set secrets.existingSecret)" .Values.secrets.mysqlUrl | b64enc | quote }}
POSTGRES_URL: {{ required "secrets.postgresUrl is required (or set secrets.existingSecret)" .Values.secrets.postgresUrl | b64enc | quote }}
{{- with .Values.secrets.redisSentinelPassword }}
REDIS_SENTINEL_PASSWORD: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.secrets.adminToken }}
ADMIN_TOKEN: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.secrets.authJwtSecret }}
AUTH_JWT_SECRET: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.secrets.authJwksUrl }}
AUTH_JWKS_URL: {{ . | b64enc | quote }}
{{- end }}
{{- end }}

{{/* Restarts pods when their configuration changes. */}}
{{- define "coupon.checksumAnnotations" -}}
checksum/config: {{ include "coupon.configData" . | sha256sum }}
{{- if not .Values.secrets.existingSecret }}
checksum/secret: {{ include "coupon.secretData" . | sha256sum }}
{{- end }}
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
    labelSelector:
      matchLabels:
        {{- include "coupon.componentSelectorLabels" (dict "ctx" .ctx "component" .component) | nindent 8 }}
{{- end }}
{{- end }}

{{/* Environment of a long-running component: ConfigMap, Secret, PORT and the component's extraEnv. */}}
{{- define "coupon.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "coupon.configMapName" .ctx }}
  - secretRef:
      name: {{ include "coupon.secretName" .ctx }}
env:
  - name: PORT
    value: {{ .values.port | quote }}
{{- range $name, $value := .values.extraEnv }}
  - name: {{ $name }}
    value: {{ $value | toString | quote }}
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

{{/* Fails rendering on value combinations the schema cannot express well. */}}
{{- define "coupon.validate" -}}
{{- if and .Values.worker.autoscaling.enabled .Values.worker.keda.enabled }}
{{- fail "worker.autoscaling.enabled and worker.keda.enabled are exclusive: KEDA creates its own HPA" }}
{{- end }}
{{- if .Values.worker.keda.enabled }}
{{- if not .Values.worker.keda.streams }}
{{- fail "worker.keda.streams must list at least one outbox stream, e.g. coupon:{summer-2026}:outbox" }}
{{- end }}
{{- if not .Values.worker.keda.redisAddress }}
{{- fail "worker.keda.redisAddress (host:port) is required when worker.keda.enabled" }}
{{- end }}
{{- end }}
{{- $drain := add (int .Values.api.preStopSleepSeconds) (div (int .Values.config.shutdownDrainMs) 1000) 5 }}
{{- if lt (int .Values.api.terminationGracePeriodSeconds) (int $drain) }}
{{- fail (printf "api.terminationGracePeriodSeconds (%v) must cover preStopSleepSeconds + config.shutdownDrainMs + 5 s for in-flight requests (%v)" .Values.api.terminationGracePeriodSeconds $drain) }}
{{- end }}
{{- if and .Values.secrets.authJwtSecret .Values.secrets.authJwksUrl }}
{{- fail "secrets.authJwtSecret and secrets.authJwksUrl are exclusive: choose one" }}
{{- end }}
{{- if and .Values.secrets.redisSentinelPassword (not .Values.config.redisSentinels) }}
{{- fail "secrets.redisSentinelPassword is set but config.redisSentinels is empty: name the Sentinels (and config.redisSentinelMaster) too" }}
{{- end }}
{{- if and (gt (int .Values.config.gateMinReplicas) 0) (ge (int .Values.config.gateReplicaTimeoutMs) (int .Values.config.redisSocketTimeoutMs)) }}
{{- fail (printf "config.gateReplicaTimeoutMs (%v) must be below config.redisSocketTimeoutMs (%v): a connection silent for the socket timeout is torn down, WAIT included" .Values.config.gateReplicaTimeoutMs .Values.config.redisSocketTimeoutMs) }}
{{- end }}
{{- /* The chart renders these itself; the same name in config.extraEnv would be a duplicate ConfigMap key. */}}
{{- $managed := include "coupon.configOwnData" . | fromYaml }}
{{- range $name, $_ := .Values.config.extraEnv }}
{{- if hasKey $managed $name }}
{{- fail (printf "config.extraEnv.%s duplicates a setting the chart renders itself: use its config.* value instead (see values.yaml)" $name) }}
{{- end }}
{{- end }}
{{- if and .Values.api.autoscaling.enabled (gt (int .Values.api.autoscaling.minReplicas) (int .Values.api.autoscaling.maxReplicas)) }}
{{- fail "api.autoscaling.minReplicas must not exceed api.autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.worker.autoscaling.enabled (gt (int .Values.worker.autoscaling.minReplicas) (int .Values.worker.autoscaling.maxReplicas)) }}
{{- fail "worker.autoscaling.minReplicas must not exceed worker.autoscaling.maxReplicas" }}
{{- end }}
{{- end }}
