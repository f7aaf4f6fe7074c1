{{/* Chart name, cut to 63 characters (DNS label limit). */}}
{{- define "claimcheck-infra.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, cut to 63 characters. If the release name already contains
the chart name it is used as is.
*/}}
{{- define "claimcheck-infra.fullname" -}}
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

{{/* Chart name and version, as used by the helm.sh/chart label. */}}
{{- define "claimcheck-infra.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "claimcheck-infra.labels" -}}
helm.sh/chart: {{ include "claimcheck-infra.chart" . }}
{{ include "claimcheck-infra.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: claimcheck
{{- end }}

{{/* Selector labels: only name and instance, so selectors never change on upgrade. */}}
{{- define "claimcheck-infra.selectorLabels" -}}
app.kubernetes.io/name: {{ include "claimcheck-infra.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels and selector labels of one component. The component label is added to the
selector of that component's workload only (it is set at creation and never changes).
Usage: include "claimcheck-infra.componentLabels" (dict "ctx" $ "component" "rabbitmq")
*/}}
{{- define "claimcheck-infra.componentLabels" -}}
{{ include "claimcheck-infra.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "claimcheck-infra.componentSelectorLabels" -}}
{{ include "claimcheck-infra.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Object names. */}}
{{- define "claimcheck-infra.rabbitmq.name" -}}
{{- .Values.rabbitmq.name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- define "claimcheck-infra.rabbitmq.headless" -}}
{{- printf "%s-headless" (include "claimcheck-infra.rabbitmq.name" .) }}
{{- end }}
{{- define "claimcheck-infra.haproxy.fullname" -}}
{{- printf "%s-haproxy" (include "claimcheck-infra.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "claimcheck-infra.minio.fullname" -}}
{{- printf "%s-minio" (include "claimcheck-infra.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "claimcheck-infra.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "claimcheck-infra.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "claimcheck-infra.connectionSecret" -}}
{{- printf "%s-connection" (include "claimcheck-infra.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* In-cluster DNS name of a Service of this release. */}}
{{- define "claimcheck-infra.svcHost" -}}
{{- printf "%s.%s.svc.%s" .name .ctx.Release.Namespace .ctx.Values.clusterDomain }}
{{- end }}

{{/*
Image reference: repository:tag@digest when both are set (the tag tells a person which
release it is, the digest is what the node pulls), else repository:tag or repository@digest.
An image without a tag and a digest fails the render instead of pulling `latest`.
*/}}
{{- define "claimcheck-infra.image" -}}
{{- $tag := toString (default "" .tag) }}
{{- if and $tag .digest }}
{{- printf "%s:%s@%s" .repository $tag .digest }}
{{- else if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else if $tag }}
{{- printf "%s:%s" .repository $tag }}
{{- else }}
{{- fail (printf "image %s has neither a tag nor a digest" .repository) }}
{{- end }}
{{- end }}

{{/*
A credential that must survive upgrades. Order: the value already stored in the
named Secret (lookup, so upgrades and re-installs never regenerate it), else the
value given in values, else a random alphanumeric string. The result is memoised
for this render so every template that needs it (the component's Secret, the
connection Secret, checksum annotations) sees the same value.
Usage: include "claimcheck-infra.credential" (dict "ctx" $ "secret" NAME "key" KEY "value" VAL "length" N)
*/}}
{{- define "claimcheck-infra.credential" -}}
{{- $ctx := .ctx }}
{{- if not (hasKey $ctx.Values "_credentials") }}
{{- $_ := set $ctx.Values "_credentials" dict }}
{{- end }}
{{- $cache := get $ctx.Values "_credentials" }}
{{- $cacheKey := printf "%s/%s" .secret .key }}
{{- if not (hasKey $cache $cacheKey) }}
{{- $value := "" }}
{{- $existing := lookup "v1" "Secret" $ctx.Release.Namespace .secret }}
{{- $data := dict }}
{{- if $existing }}{{- $data = (get $existing "data") | default dict }}{{- end }}
{{- if hasKey $data .key }}
{{- $value = index $data .key | b64dec }}
{{- else if .value }}
{{- $value = toString .value }}
{{- else }}
{{- $value = randAlphaNum (int (default 32 .length)) }}
{{- end }}
{{- $_ := set $cache $cacheKey $value }}
{{- end }}
{{- get $cache $cacheKey }}
{{- end }}

{{/* Credentials, named once. */}}
{{- define "claimcheck-infra.rabbitmq.secretName" -}}
{{- printf "%s-default-user" (include "claimcheck-infra.rabbitmq.name" .) }}
{{- end }}
{{- define "claimcheck-infra.rabbitmq.cookieSecretName" -}}
{{- printf "%s-erlang-cookie" (include "claimcheck-infra.rabbitmq.name" .) }}
{{- end }}
{{- define "claimcheck-infra.rabbitmq.password" -}}
{{- include "claimcheck-infra.credential" (dict "ctx" . "secret" (include "claimcheck-infra.rabbitmq.secretName" .) "key" "password" "value" .Values.rabbitmq.auth.password "length" 32) }}
{{- end }}
{{- define "claimcheck-infra.rabbitmq.cookie" -}}
{{- include "claimcheck-infra.credential" (dict "ctx" . "secret" (include "claimcheck-infra.rabbitmq.cookieSecretName" .) "key" ".erlang.cookie" "value" .Values.rabbitmq.auth.erlangCookie "length" 64) }}
{{- end }}
{{- define "claimcheck-infra.minio.rootUser" -}}
{{- include "claimcheck-infra.credential" (dict "ctx" . "secret" (include "claimcheck-infra.minio.fullname" .) "key" "rootUser" "value" .Values.minio.auth.rootUser "length" 16) }}
{{- end }}
{{- define "claimcheck-infra.minio.rootPassword" -}}
{{- include "claimcheck-infra.credential" (dict "ctx" . "secret" (include "claimcheck-infra.minio.fullname" .) "key" "rootPassword" "value" .Values.minio.auth.rootPassword "length" 40) }}
{{- end }}
{{/* Secret key of one role's S3 user. Usage: include "claimcheck-infra.minio.roleSecretKey" (dict "ctx" $ "role" "producer") */}}
{{- define "claimcheck-infra.minio.roleSecretKey" -}}
{{- include "claimcheck-infra.credential" (dict "ctx" .ctx "secret" (include "claimcheck-infra.minio.fullname" .ctx) "key" (printf "%sSecretKey" .role) "value" (get .ctx.Values.minio.auth.secretKeys .role) "length" 40) }}
{{- end }}
{{/* The application roles that get an S3 user, in a fixed order. */}}
{{- define "claimcheck-infra.minio.roles" -}}
{{- list "producer" "consumer" "coordinator" | toJson }}
{{- end }}
{{- define "claimcheck-infra.postgresql.password" -}}
{{- include "claimcheck-infra.credential" (dict "ctx" . "secret" (include "claimcheck-infra.postgresql.fullname" .) "key" "POSTGRES_PASSWORD" "value" .Values.postgresql.auth.password "length" 32) }}
{{- end }}
{{- define "claimcheck-infra.postgresql.readerPassword" -}}
{{- include "claimcheck-infra.credential" (dict "ctx" . "secret" (include "claimcheck-infra.postgresql.fullname" .) "key" "READER_PASSWORD" "value" .Values.postgresql.auth.readerPassword "length" 32) }}
{{- end }}

{{/* Restricted pod-level security context, merged with values. */}}
{{- define "claimcheck-infra.podSecurityContext" -}}
{{- $base := dict "runAsNonRoot" true "seccompProfile" (dict "type" "RuntimeDefault") }}
{{- toYaml (mergeOverwrite $base (deepCopy (.podSecurityContext | default dict))) }}
{{- end }}

{{/* Restricted container security context, merged with values. */}}
{{- define "claimcheck-infra.containerSecurityContext" -}}
{{- $base := dict "runAsNonRoot" true "allowPrivilegeEscalation" false "readOnlyRootFilesystem" true "capabilities" (dict "drop" (list "ALL")) "seccompProfile" (dict "type" "RuntimeDefault") }}
{{- toYaml (mergeOverwrite $base (deepCopy (.containerSecurityContext | default dict))) }}
{{- end }}

{{/* Kubernetes quantity (Ki, Mi, Gi, Ti, k, M, G, T or plain bytes) in bytes. */}}
{{- define "claimcheck-infra.bytes" -}}
{{- $q := toString . }}
{{- $units := dict "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 }}
{{- $result := "" }}
{{- range $suffix := list "Ki" "Mi" "Gi" "Ti" "k" "M" "G" "T" }}
{{- if and (not $result) (hasSuffix $suffix $q) }}
{{- $result = printf "%d" (int64 (mulf (float64 (trimSuffix $suffix $q)) (float64 (get $units $suffix)))) }}
{{- end }}
{{- end }}
{{- default (printf "%d" (int64 (float64 $q))) $result }}
{{- end }}
