{{/* Chart name, cut to 63 characters (DNS label limit). */}}
{{- define "claimcheck.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, cut to 63 characters. If the release name already contains
the chart name it is used as is.
*/}}
{{- define "claimcheck.fullname" -}}
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
{{- define "claimcheck.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "claimcheck.labels" -}}
helm.sh/chart: {{ include "claimcheck.chart" . }}
{{ include "claimcheck.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: claimcheck
{{- end }}

{{/* Selector labels: only name and instance, so selectors never change on upgrade. */}}
{{- define "claimcheck.selectorLabels" -}}
app.kubernetes.io/name: {{ include "claimcheck.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels and selector labels of one component (the component label never changes). */}}
{{- define "claimcheck.componentLabels" -}}
{{ include "claimcheck.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "claimcheck.componentSelectorLabels" -}}
{{ include "claimcheck.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Object names. */}}
{{- define "claimcheck.envSecret" -}}
{{- printf "%s-env" (include "claimcheck.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "claimcheck.coordinator.fullname" -}}
{{- printf "%s-coordinator" (include "claimcheck.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "claimcheck.operator.fullname" -}}
{{- printf "%s-operator" (include "claimcheck.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "claimcheck.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "claimcheck.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The application image: repository:tag, or repository:tag@digest when a digest is set
(the tag, appVersion by default, names the release; the digest is what the node pulls). */}}
{{- define "claimcheck.image" -}}
{{- $i := .Values.image }}
{{- $tag := toString (default .Chart.AppVersion $i.tag) }}
{{- if $i.digest }}
{{- printf "%s:%s@%s" $i.repository $tag $i.digest }}
{{- else }}
{{- printf "%s:%s" $i.repository $tag }}
{{- end }}
{{- end }}

{{/* In-cluster URL of the coordinator Service. */}}
{{- define "claimcheck.coordinator.url" -}}
{{- printf "http://%s.%s.svc.%s:%d" (include "claimcheck.coordinator.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.coordinator.service.port) }}
{{- end }}

{{/* Restricted pod-level security context, merged with values. */}}
{{- define "claimcheck.podSecurityContext" -}}
{{- $base := dict "runAsNonRoot" true "seccompProfile" (dict "type" "RuntimeDefault") }}
{{- toYaml (mergeOverwrite $base (deepCopy (.podSecurityContext | default dict))) }}
{{- end }}

{{/* Restricted container security context, merged with values. */}}
{{- define "claimcheck.containerSecurityContext" -}}
{{- $base := dict "runAsNonRoot" true "allowPrivilegeEscalation" false "readOnlyRootFilesystem" true "capabilities" (dict "drop" (list "ALL")) "seccompProfile" (dict "type" "RuntimeDefault") }}
{{- toYaml (mergeOverwrite $base (deepCopy (.containerSecurityContext | default dict))) }}
{{- end }}

{{/*
The CLAIMCHECK_* settings (docs/interfaces.md) as a dict. Each connection setting is
the value given in values.config, else the one in the claimcheck-infra connection
Secret (lookup; present on a real install or upgrade), else a credential-free
placeholder derived from the infra release's service names (helm template only).
*/}}
{{- define "claimcheck.settings" -}}
{{- /* Computed once per render and memoised in .Values, so the env Secret and every
checksum/env annotation see the same generated HMAC key: an unchanged upgrade rolls nothing. */}}
{{- if not (hasKey .Values "_settings") }}
{{- $_ := set .Values "_settings" (include "claimcheck.settingsOnce" .) }}
{{- end }}
{{- get .Values "_settings" }}
{{- end }}

{{- define "claimcheck.settingsOnce" -}}
{{- $c := .Values.config }}
{{- $infraNs := default .Release.Namespace .Values.infra.namespace }}
{{- $conn := dict }}
{{- $found := lookup "v1" "Secret" $infraNs .Values.infra.connectionSecret }}
{{- if $found }}{{- $conn = (get $found "data") | default dict }}{{- end }}
{{- $defaults := dict
  "CLAIMCHECK_AMQP_URL" (printf "amqp://%s-haproxy.%s.svc.%s:5672/%%2F" .Values.infra.fullname $infraNs .Values.clusterDomain)
  "CLAIMCHECK_S3_ENDPOINT_URL" (printf "http://%s-minio.%s.svc.%s:9000" .Values.infra.fullname $infraNs .Values.clusterDomain)
  "CLAIMCHECK_S3_ACCESS_KEY_ID" ""
  "CLAIMCHECK_S3_SECRET_ACCESS_KEY" ""
  "CLAIMCHECK_S3_REGION" "us-east-1"
  "CLAIMCHECK_S3_BUCKET" "claimcheck"
  "CLAIMCHECK_DATABASE_URL" (printf "postgresql://%s-postgresql.%s.svc.%s:5432/claimcheck" .Values.infra.fullname $infraNs .Values.clusterDomain) }}
{{- $given := dict
  "CLAIMCHECK_AMQP_URL" $c.amqpUrl
  "CLAIMCHECK_S3_ENDPOINT_URL" $c.s3EndpointUrl
  "CLAIMCHECK_S3_ACCESS_KEY_ID" $c.s3AccessKeyId
  "CLAIMCHECK_S3_SECRET_ACCESS_KEY" $c.s3SecretAccessKey
  "CLAIMCHECK_S3_REGION" $c.s3Region
  "CLAIMCHECK_S3_BUCKET" $c.s3Bucket
  "CLAIMCHECK_DATABASE_URL" $c.databaseUrl }}
{{- $out := dict }}
{{- $missing := list }}
{{- range $key := keys $defaults | sortAlpha }}
{{- if get $given $key }}
{{- $_ := set $out $key (get $given $key | toString) }}
{{- else if hasKey $conn $key }}
{{- $_ := set $out $key (get $conn $key | b64dec) }}
{{- else }}
{{- $_ := set $out $key (get $defaults $key) }}
{{- $missing = append $missing $key }}
{{- end }}
{{- end }}
{{- if and $missing .Values.infra.required (lookup "v1" "ServiceAccount" .Release.Namespace "default") }}
{{- fail (printf "Secret %s/%s (from the claimcheck-infra chart) not found and no values for %s: install claimcheck-infra first, set infra.connectionSecret/infra.namespace, or give config.* values" $infraNs .Values.infra.connectionSecret (join ", " $missing)) }}
{{- end }}
{{- $_ := set $out "CLAIMCHECK_COORDINATOR_URL" (include "claimcheck.coordinator.url" .) }}
{{- $_ := set $out "CLAIMCHECK_HTTP_PORT" (toString .Values.config.httpPort) }}
{{- $_ := set $out "CLAIMCHECK_LOG_LEVEL" .Values.config.logLevel }}
{{- /* HMAC keys for signed pointers and ACKs: values, else the installed Secret's, else random. */}}
{{- $hmac := .Values.config.hmacKeys }}
{{- $installed := lookup "v1" "Secret" .Release.Namespace (include "claimcheck.envSecret" .) }}
{{- if and (not $hmac) $installed (hasKey ($installed.data | default dict) "CLAIMCHECK_HMAC_KEYS") }}
{{- $hmac = index $installed.data "CLAIMCHECK_HMAC_KEYS" | b64dec }}
{{- end }}
{{- $_ := set $out "CLAIMCHECK_HMAC_KEYS" (default (printf "k1:%s" (randAlphaNum 40)) $hmac) }}
{{- toYaml $out }}
{{- end }}

{{/*
The operator's RBAC rules, exactly as in files/rbac-rules.yaml (a copy of
operator/rbac-rules.yaml): a YAML list of rules, or a mapping with a `rules` list.
*/}}
{{- define "claimcheck.operator.rules" -}}
{{- $raw := .Files.Get "files/rbac-rules.yaml" }}
{{- if not $raw }}{{- fail "files/rbac-rules.yaml is missing from the chart" }}{{- end }}
{{- $doc := fromYaml $raw }}
{{- if hasKey $doc "rules" }}
{{- toYaml (get $doc "rules") }}
{{- else }}
{{- toYaml (fromYamlArray $raw) }}
{{- end }}
{{- end }}
