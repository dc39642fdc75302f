{{/* Fails rendering on value combinations the schema cannot express well. */}}
{{- define "coupon.validate" -}}
{{- if and .Values.worker.autoscaling.enabled .Values.worker.keda.enabled }}
{{- fail "worker.autoscaling.enabled and worker.keda.enabled are exclusive: KEDA creates its own HPA" }}
{{- end }}
{{- if .Values.worker.keda.enabled }}
{{- if not .Values.worker.keda.streams }}
{{- fail "worker.keda.streams must list at least one outbox stream, e.g. coupon:{summer-2026}:outbox" }}
{{- end }}
{{- if not (or .Values.worker.keda.redisAddress .Values.config.redisClusterNodes) }}
{{- fail "worker.keda.redisAddress (host:port) is required when worker.keda.enabled (on a Redis Cluster the KEDA trigger takes config.redisClusterNodes instead)" }}
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
{{- /* A setting has its own value: the same variable in an extraEnv would be written twice, one of them ignored. */}}
{{- $managed := dict "PORT" "api.port / worker.port" }}
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
{{- if and .Values.api.autoscaling.enabled (gt (int .Values.api.autoscaling.minReplicas) (int .Values.api.autoscaling.maxReplicas)) }}
{{- fail "api.autoscaling.minReplicas must not exceed api.autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.worker.autoscaling.enabled (gt (int .Values.worker.autoscaling.minReplicas) (int .Values.worker.autoscaling.maxReplicas)) }}
{{- fail "worker.autoscaling.minReplicas must not exceed worker.autoscaling.maxReplicas" }}
{{- end }}
{{- end }}
