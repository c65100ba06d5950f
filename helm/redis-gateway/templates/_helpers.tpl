{{/*
Helpers of the redis-gateway chart: names, labels, the image, the grace period, and the checks
that stop a rendering with a message when values conflict or a required one is missing.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "redis-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The resource name prefix: fullnameOverride, or release name and chart name. */}}
{{- define "redis-gateway.fullname" -}}
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

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "redis-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels every resource carries. */}}
{{- define "redis-gateway.labels" -}}
helm.sh/chart: {{ include "redis-gateway.chart" . }}
{{ include "redis-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels that select the gateway's pods. */}}
{{- define "redis-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "redis-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "redis-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "redis-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: repository and tag (the chart's appVersion by default). */}}
{{- define "redis-gateway.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The pod's terminationGracePeriodSeconds: the preStop sleep, then the gateway's drain
(GATEWAY_DRAIN_TIMEOUT), then a margin, so Kubernetes never kills a gateway still draining.
*/}}
{{- define "redis-gateway.terminationGracePeriodSeconds" -}}
{{- add (int .Values.preStopSleepSeconds) (int .Values.drainTimeoutSeconds) (int .Values.terminationGraceMarginSeconds) }}
{{- end }}

{{/* The CA Secret of client certificates (mTLS): its own, or the server certificate's. */}}
{{- define "redis-gateway.clientCASecret" -}}
{{- default .Values.tls.existingSecret .Values.tls.clientCA.existingSecret }}
{{- end }}

{{/*
Checks the values the schema cannot: fails the rendering with a message naming the value.
*/}}
{{- define "redis-gateway.validate" -}}
{{- $redisTarget := or .Values.redis.url .Values.redis.urlSecret.existingSecret (hasKey .Values.config "REDIS_HOST") (hasKey .Values.config "REDIS_NODES") }}
{{- if not $redisTarget }}
{{- fail "redis.url (or redis.urlSecret.existingSecret, or REDIS_HOST / REDIS_NODES under config) must name the Redis to use" }}
{{- end }}
{{- if and .Values.redis.url .Values.redis.urlSecret.existingSecret }}
{{- fail "set redis.url or redis.urlSecret.existingSecret, not both" }}
{{- end }}
{{- if and (not .Values.auth.existingSecret) (not .Values.auth.none) }}
{{- fail "auth.existingSecret must name a Secret holding the auth file (bearer tokens), or auth.none=true must be set explicitly to serve without authentication" }}
{{- end }}
{{- if and .Values.auth.existingSecret .Values.auth.none }}
{{- fail "set auth.existingSecret or auth.none=true, not both" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- fail "tls.enabled needs tls.existingSecret: the Secret with the gRPC port's certificate and key" }}
{{- end }}
{{- if and .Values.tls.clientCA.enabled (not .Values.tls.enabled) }}
{{- fail "tls.clientCA.enabled needs tls.enabled: client certificates are checked during the TLS handshake" }}
{{- end }}
{{- if ne (empty .Values.redis.tls.certKey) (empty .Values.redis.tls.keyKey) }}
{{- fail "redis.tls.certKey and redis.tls.keyKey go together: a client certificate needs its key" }}
{{- end }}
{{- if and (or .Values.redis.tls.certKey .Values.redis.tls.keyKey) (not .Values.redis.tls.existingSecret) }}
{{- fail "redis.tls.certKey needs redis.tls.existingSecret: the Secret with the client certificate" }}
{{- end }}
{{- if and .Values.redis.tls.existingSecret (not .Values.redis.tls.enabled) (not (hasPrefix "rediss" .Values.redis.url)) }}
{{- fail "redis.tls.existingSecret is set but TLS to Redis is off: set redis.tls.enabled=true (or use a rediss:// URL)" }}
{{- end }}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) (int .Values.grpcPort)) }}
{{- fail "metrics.port must differ from grpcPort" }}
{{- end }}
{{- if and (gt (int .Values.preStopSleepSeconds) 0) (semverCompare "<1.30-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "preStopSleepSeconds needs Kubernetes 1.30 or later (the preStop sleep action); this is %s" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- $reserved := list "GATEWAY_LISTEN" "GATEWAY_METRICS_LISTEN" "GATEWAY_DRAIN_TIMEOUT" "GATEWAY_AUTH" "GATEWAY_AUTH_FILE" "GATEWAY_TLS_CERT" "GATEWAY_TLS_KEY" "GATEWAY_TLS_CLIENT_CA" "GATEWAY_EMBEDDED_REDIS" "REDIS_URL" "REDIS_USERNAME" "REDIS_PASSWORD" "REDIS_SENTINEL_PASSWORD" "REDIS_TLS" "REDIS_TLS_CA" "REDIS_TLS_CERT" "REDIS_TLS_KEY" }}
{{- range $name, $value := .Values.config }}
{{- if eq $name "GATEWAY_EMBEDDED_REDIS" }}
{{- fail "config.GATEWAY_EMBEDDED_REDIS: the image has no embedded Redis; name an external one (redis.url)" }}
{{- else if has $name $reserved }}
{{- fail (printf "config.%s is derived by the chart from other values: set those instead (see values.yaml)" $name) }}
{{- end }}
{{- end }}
{{- end }}
