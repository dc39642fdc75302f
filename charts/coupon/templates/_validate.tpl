{{/* Fails rendering on value combinations the schema cannot express well. */}}
{{- define "coupon.validate" -}}
{{- if and .Values.worker.autoscaling.enabled .Values.worker.keda.enabled }}
{{- fail "worker.autoscaling.enabled and worker.keda.enabled are exclusive: KEDA creates its own HPA" }}
{{- end }}
{{- if .Values.worker.keda.enabled }}
{{- if not .Values.worker.keda.streams }}
{{- fail "worker.keda.streams must list at least one outbox stream, e.g. coupon:{summer-2026}:outbox" }}
{{- end }}
{{- if not (or .Values.worker.keda.redisAddress .Values.config.redisClusterNodes .Values.config.redisSentinels) }}
{{- fail "worker.keda.redisAddress (host:port) is required when worker.keda.enabled (on a Redis Cluster the KEDA trigger takes config.redisClusterNodes instead, behind Sentinel config.redisSentinels)" }}
{{- end }}
{{- if and .Values.worker.keda.redisAddress .Values.config.redisSentinels }}
{{- fail "worker.keda.redisAddress is not used behind Sentinel: KEDA asks config.redisSentinels for the primary (redis-sentinel-streams); leave it empty" }}
{{- end }}
{{- end }}
{{- /*
The api's real drain after SIGTERM: SHUTDOWN_DRAIN_MS of failing /readyz, up to 10 s for in-flight requests, then
its closes, and whatever hangs it exits 30 s after SIGTERM (src/shutdown.ts). The grace period covers all of it:
the preStop sleep + 30 s + 5 s for the exit itself (preStop + 35 s), else SIGKILL may cut answers still due.
*/}}
{{- $drain := add (int .Values.api.preStopSleepSeconds) 35 }}
{{- if lt (int .Values.api.terminationGracePeriodSeconds) (int $drain) }}
{{- fail (printf "api.terminationGracePeriodSeconds (%v) must cover preStopSleepSeconds + 35 s: the api drains and exits within 30 s of SIGTERM, + 5 s to exit (%v)" .Values.api.terminationGracePeriodSeconds $drain) }}
{{- end }}
{{- if include "coupon.presaleOn" . }}
{{- if not .Values.api.autoscaling.enabled }}
{{- fail "config.presaleReplicas raises the api HPA's minReplicas before each sale: it needs api.autoscaling.enabled" }}
{{- end }}
{{- if gt (int .Values.config.presaleReplicas) (int .Values.api.autoscaling.maxReplicas) }}
{{- fail (printf "config.presaleReplicas (%v) is above api.autoscaling.maxReplicas (%v): the HPA would refuse it" .Values.config.presaleReplicas .Values.api.autoscaling.maxReplicas) }}
{{- end }}
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
{{- /* A setting has its own value: the same variable in an extraEnv would be written twice, one of them ignored. */}}
{{- $managed := dict "PORT" "api.port / worker.port" "OPS_PORT" "api.opsPort" }}
{{- range $section := list "config" "secrets" }}
{{- range $name, $_ := omit (get $.Values $section) "extraEnv" "existingSecret" }}
{{- $_ := set $managed ($name | snakecase | upper) (printf "%s.%s" $section $name) }}
{{- end }}
{{- end }}
{{- range $owner := list "config" "api" "worker" }}
{{- range $name, $_ := (get $.Values $owner).extraEnv }}
{{- if hasKey $managed $name }}
{{- fail (printf "%s.extraEnv.%s duplicates a setting the chart renders itself: set %s instead (see values.yaml)" $owner $name (get $managed $name)) }}
{{- end }}
{{- end }}
{{- end }}
{{- /*
The heap is sized per container from its own memory limit (heapPercentOfMemoryLimit): a --max-old-space-size in
config.extraEnv would reach the migrations Job too (384 MB of heap under its 256Mi limit), and one in a component's
extraEnv would fight the chart's flag.
*/}}
{{- range $owner := list "config" "api" "worker" }}
{{- $options := toString (dig "extraEnv" "NODE_OPTIONS" "" (get $.Values $owner)) }}
{{- if and (regexMatch "--max[-_]old[-_]space[-_]size" $options) (or (eq $owner "config") (gt (int $.Values.heapPercentOfMemoryLimit) 0)) }}
{{- fail (printf "%s.extraEnv.NODE_OPTIONS sets --max-old-space-size: the chart sizes each container's heap from its own resources.limits.memory (heapPercentOfMemoryLimit, %v%%)%s" $owner $.Values.heapPercentOfMemoryLimit (ternary "; config.extraEnv reaches the migrations Job too, whose limit is smaller" "; set heapPercentOfMemoryLimit to 0 to size it yourself" (eq $owner "config"))) }}
{{- end }}
{{- end }}
{{- /*
A production release names its own credentials. The defaults (the Services of k8s/deps, their dev-*-password
passwords, a generated admin token) are for a first try: taken into production they point at nothing, or at a
development store, and a generated token changes on every render that cannot read the release's Secret back
(helm template, a GitOps sync). A release is taken as production when it says so (production: true) or when it
names Redis Sentinels or Cluster nodes outside k8s/deps (namespace coupon-deps); only production: true requires
an admin token of its own.
*/}}
{{- $why := ternary "production: true" "" (eq (toString .Values.production) "true") }}
{{- range $node := concat .Values.config.redisSentinels .Values.config.redisClusterNodes }}
{{- if and (not $why) (not (contains ".coupon-deps." $node)) }}
{{- $why = printf "Redis nodes outside k8s/deps, e.g. %s" $node }}
{{- end }}
{{- end }}
{{- if and $why (not .Values.secrets.existingSecret) }}
{{- range $name := list "redisUrl" "mysqlUrl" "postgresUrl" "redisSentinelPassword" }}
{{- $value := toString (get $.Values.secrets $name) }}
{{- if or (contains ".coupon-deps." $value) (regexMatch "(^|:)dev-[a-z]+-password(@|$)" $value) }}
{{- fail (printf "a production release (%s) must not use the development default of secrets.%s (k8s/deps: a Service in namespace coupon-deps or its dev-*-password): set secrets.%s, or secrets.existingSecret" $why $name $name) }}
{{- end }}
{{- end }}
{{- if and .Values.production (not .Values.secrets.adminToken) }}
{{- fail (printf "a production release (%s) must name its admin token: set secrets.adminToken (16+ characters) or secrets.existingSecret with ADMIN_TOKEN. A generated one is kept by helm install/upgrade, but changes on every render that cannot read the release's Secret back (helm template, GitOps)" $why) }}
{{- end }}
{{- end }}
{{- if and .Values.api.autoscaling.enabled (gt (int .Values.api.autoscaling.minReplicas) (int .Values.api.autoscaling.maxReplicas)) }}
{{- fail "api.autoscaling.minReplicas must not exceed api.autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.worker.autoscaling.enabled (gt (int .Values.worker.autoscaling.minReplicas) (int .Values.worker.autoscaling.maxReplicas)) }}
{{- fail "worker.autoscaling.minReplicas must not exceed worker.autoscaling.maxReplicas" }}
{{- end }}
{{- end }}
