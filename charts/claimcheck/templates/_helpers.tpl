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

{{/* Object names. One Secret per role: <fullname>-<role>, <fullname>-recipient-<group>. */}}
{{- define "claimcheck.roleSecret" -}}
{{- printf "%s-%s" (include "claimcheck.fullname" .ctx) .role }}
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
Every role's CLAIMCHECK_* settings, as a dict of Secrets (role -> variables), computed once
per render and memoised in .Values, so the Secrets and every checksum annotation see the same
generated credentials: an unchanged upgrade rolls nothing.
Roles: producer, coordinator, operator, reader, provision (the hook Job only) and
recipients.<group>. Each pod mounts only its role's Secret.
*/}}
{{- define "claimcheck.settings" -}}
{{- if not (hasKey .Values "_settings") }}
{{- $_ := set .Values "_settings" (include "claimcheck.settingsOnce" .) }}
{{- end }}
{{- get .Values "_settings" }}
{{- end }}

{{/* The checksum of one role's settings, for pod annotations. */}}
{{- define "claimcheck.settingsChecksum" -}}
{{- $s := include "claimcheck.settings" .ctx | fromYaml }}
{{- if hasPrefix "recipients." .role }}
{{- get (get $s "recipients") (trimPrefix "recipients." .role) | toJson | sha256sum }}
{{- else }}
{{- get $s .role | toJson | sha256sum }}
{{- end }}
{{- end }}

{{/*
A credential that must survive upgrades: the value given in values (so a rotation takes
effect), else the one in the installed Secret (lookup), else freshly generated.
Usage: include "claimcheck.kept" (dict "ctx" $ "secret" NAME "key" KEY "value" VAL "new" GENERATED)
*/}}
{{- define "claimcheck.kept" -}}
{{- if .value }}
{{- toString .value }}
{{- else }}
{{- $found := lookup "v1" "Secret" .ctx.Release.Namespace .secret }}
{{- $data := dict }}
{{- if $found }}{{- $data = (get $found "data") | default dict }}{{- end }}
{{- if hasKey $data .key }}
{{- index $data .key | b64dec }}
{{- else }}
{{- .new }}
{{- end }}
{{- end }}
{{- end }}

{{/* A broker password: values, else the one in the role's installed AMQP URL, else random. */}}
{{- define "claimcheck.brokerPassword" -}}
{{- if .value }}
{{- toString .value }}
{{- else }}
{{- $url := include "claimcheck.kept" (dict "ctx" .ctx "secret" .secret "key" "CLAIMCHECK_AMQP_URL" "value" "" "new" "") }}
{{- $userinfo := "" }}
{{- if $url }}{{- $userinfo = get (urlParse $url) "userinfo" }}{{- end }}
{{- if contains ":" $userinfo }}
{{- index (splitn ":" 2 $userinfo) "_1" }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}
{{- end }}

{{/* An AMQP URL for one broker user: the credential-free endpoint with user:password added. */}}
{{- define "claimcheck.amqpUrl" -}}
{{- $parts := splitn "://" 2 .endpoint }}
{{- printf "%s://%s:%s@%s" $parts._0 (.user | urlquery) (.password | urlquery) $parts._1 }}
{{- end }}

{{- define "claimcheck.settingsOnce" -}}
{{- $c := .Values.config }}
{{- $ns := .Release.Namespace }}
{{- $infraNs := default .Release.Namespace .Values.infra.namespace }}
{{- $infraSvc := printf "%s.svc.%s" $infraNs .Values.clusterDomain }}
{{- /* Connection settings: values, else the claimcheck-infra connection Secret (lookup),
else credential-free placeholders (helm template without a cluster). */}}
{{- $conn := dict }}
{{- $found := lookup "v1" "Secret" $infraNs .Values.infra.connectionSecret }}
{{- if $found }}{{- $conn = (get $found "data") | default dict }}{{- end }}
{{- $s3 := $c.s3Credentials }}
{{- $given := dict
  "CLAIMCHECK_AMQP_ENDPOINT" $c.amqpEndpoint
  "CLAIMCHECK_AMQP_ADMIN_URL" .Values.broker.adminUrl
  "CLAIMCHECK_MANAGEMENT_URL" .Values.broker.managementUrl
  "CLAIMCHECK_S3_ENDPOINT_URL" $c.s3EndpointUrl
  "CLAIMCHECK_S3_REGION" $c.s3Region
  "CLAIMCHECK_S3_BUCKET" $c.s3Bucket
  "CLAIMCHECK_S3_PRODUCER_ACCESS_KEY_ID" $s3.producer.accessKeyId
  "CLAIMCHECK_S3_PRODUCER_SECRET_ACCESS_KEY" $s3.producer.secretAccessKey
  "CLAIMCHECK_S3_CONSUMER_ACCESS_KEY_ID" $s3.consumer.accessKeyId
  "CLAIMCHECK_S3_CONSUMER_SECRET_ACCESS_KEY" $s3.consumer.secretAccessKey
  "CLAIMCHECK_S3_COORDINATOR_ACCESS_KEY_ID" $s3.coordinator.accessKeyId
  "CLAIMCHECK_S3_COORDINATOR_SECRET_ACCESS_KEY" $s3.coordinator.secretAccessKey
  "CLAIMCHECK_DATABASE_URL" $c.databaseUrl
  "CLAIMCHECK_DATABASE_READER_URL" $c.databaseReaderUrl }}
{{- $defaults := dict
  "CLAIMCHECK_AMQP_ENDPOINT" (printf "amqp://%s-haproxy.%s:5672/%%2F" .Values.infra.fullname $infraSvc)
  "CLAIMCHECK_AMQP_ADMIN_URL" (printf "amqp://%s-haproxy.%s:5672/%%2F" .Values.infra.fullname $infraSvc)
  "CLAIMCHECK_MANAGEMENT_URL" (printf "http://%s-haproxy.%s:15672" .Values.infra.fullname $infraSvc)
  "CLAIMCHECK_S3_ENDPOINT_URL" (printf "http://%s-minio.%s:9000" .Values.infra.fullname $infraSvc)
  "CLAIMCHECK_S3_REGION" "us-east-1"
  "CLAIMCHECK_S3_BUCKET" "claimcheck"
  "CLAIMCHECK_S3_PRODUCER_ACCESS_KEY_ID" "" "CLAIMCHECK_S3_PRODUCER_SECRET_ACCESS_KEY" ""
  "CLAIMCHECK_S3_CONSUMER_ACCESS_KEY_ID" "" "CLAIMCHECK_S3_CONSUMER_SECRET_ACCESS_KEY" ""
  "CLAIMCHECK_S3_COORDINATOR_ACCESS_KEY_ID" "" "CLAIMCHECK_S3_COORDINATOR_SECRET_ACCESS_KEY" ""
  "CLAIMCHECK_DATABASE_URL" (printf "postgresql://%s-postgresql.%s:5432/claimcheck" .Values.infra.fullname $infraSvc)
  "CLAIMCHECK_DATABASE_READER_URL" (printf "postgresql://%s-postgresql.%s:5432/claimcheck" .Values.infra.fullname $infraSvc) }}
{{- $optional := list "CLAIMCHECK_S3_REGION" "CLAIMCHECK_S3_BUCKET" }}
{{- if not .Values.broker.provision }}
{{- $optional = concat $optional (list "CLAIMCHECK_AMQP_ADMIN_URL" "CLAIMCHECK_MANAGEMENT_URL") }}
{{- end }}
{{- $x := dict }}
{{- $missing := list }}
{{- range $key := keys $defaults | sortAlpha }}
{{- if get $given $key }}
{{- $_ := set $x $key (get $given $key | toString) }}
{{- else if hasKey $conn $key }}
{{- $_ := set $x $key (get $conn $key | b64dec) }}
{{- else }}
{{- $_ := set $x $key (get $defaults $key) }}
{{- if not (has $key $optional) }}{{- $missing = append $missing $key }}{{- end }}
{{- end }}
{{- end }}
{{- if and $missing .Values.infra.required (lookup "v1" "ServiceAccount" .Release.Namespace "default") }}
{{- fail (printf "Secret %s/%s (from the claimcheck-infra chart) not found and no values for %s: install claimcheck-infra first, set infra.connectionSecret/infra.namespace, or give config.* and broker.* values" $infraNs .Values.infra.connectionSecret (join ", " $missing)) }}
{{- end }}
{{- $endpoint := get $x "CLAIMCHECK_AMQP_ENDPOINT" }}
{{- if or (not (contains "://" $endpoint)) (contains "@" $endpoint) }}
{{- fail (printf "config.amqpEndpoint (or the connection Secret's CLAIMCHECK_AMQP_ENDPOINT) must be an amqp:// or amqps:// URL without credentials, got %q: each role's broker user is added by the chart" (regexReplaceAll "//[^@/]*@" $endpoint "//***@")) }}
{{- end }}
{{- $names := dict "producer" (include "claimcheck.roleSecret" (dict "ctx" . "role" "producer")) "coordinator" (include "claimcheck.roleSecret" (dict "ctx" . "role" "coordinator")) }}
{{- /* Recipient groups: DNS labels, unique, at least one. */}}
{{- $groups := list }}
{{- range .Values.recipients }}
{{- if has .name $groups }}{{- fail (printf "recipients: group %q is listed twice" .name) }}{{- end }}
{{- $groups = append $groups .name }}
{{- end }}
{{- if not $groups }}{{- fail "recipients: configure at least one recipient group" }}{{- end }}
{{- /* Pointer keys (Ed25519): values, else signing.existingSecret, else the installed producer
and coordinator Secrets. Helm cannot derive a public key, so they are never generated here. */}}
{{- $signing := .Values.signing.pointerSigningKey }}
{{- $verify := .Values.signing.pointerVerifyKeys }}
{{- if and (not $signing) .Values.signing.existingSecret }}
{{- $existing := lookup "v1" "Secret" $ns .Values.signing.existingSecret }}
{{- $data := dict }}
{{- if $existing }}{{- $data = (get $existing "data") | default dict }}{{- end }}
{{- if hasKey $data "CLAIMCHECK_POINTER_SIGNING_KEY" }}{{- $signing = index $data "CLAIMCHECK_POINTER_SIGNING_KEY" | b64dec }}{{- end }}
{{- if and (not $verify) (hasKey $data "CLAIMCHECK_POINTER_VERIFY_KEYS") }}{{- $verify = index $data "CLAIMCHECK_POINTER_VERIFY_KEYS" | b64dec }}{{- end }}
{{- end }}
{{- $signing = include "claimcheck.kept" (dict "ctx" . "secret" $names.producer "key" "CLAIMCHECK_POINTER_SIGNING_KEY" "value" $signing "new" "") }}
{{- $verify = include "claimcheck.kept" (dict "ctx" . "secret" $names.coordinator "key" "CLAIMCHECK_POINTER_VERIFY_KEYS" "value" $verify "new" "") }}
{{- if or (not $signing) (not $verify) }}
{{- fail "no pointer keys: run `claimcheck keys pointer` and pass its two lines as --set signing.pointerSigningKey=kid:... --set signing.pointerVerifyKeys=kid:... (or put both variables in a Secret named by signing.existingSecret); an installed release keeps its keys on upgrade" }}
{{- end }}
{{- $keyPattern := "^[A-Za-z0-9._-]+:[A-Za-z0-9_-]{43}=?$" }}
{{- if not (regexMatch $keyPattern $signing) }}
{{- fail "signing.pointerSigningKey must be kid:<urlsafe base64 of a 32-byte Ed25519 seed> (the CLAIMCHECK_POINTER_SIGNING_KEY line of `claimcheck keys pointer`)" }}
{{- end }}
{{- range splitList "," $verify }}
{{- if not (regexMatch $keyPattern .) }}
{{- fail "signing.pointerVerifyKeys must be kid:<urlsafe base64 of a 32-byte Ed25519 public key>[,kid:...] (the CLAIMCHECK_POINTER_VERIFY_KEYS line of `claimcheck keys pointer`)" }}
{{- end }}
{{- end }}
{{- /* HMAC material and control tokens. */}}
{{- $coordKey := include "claimcheck.kept" (dict "ctx" . "secret" $names.coordinator "key" "CLAIMCHECK_COORDINATOR_KEY" "value" .Values.credentials.coordinatorKey "new" (printf "k1:%s" (randAlphaNum 40))) }}
{{- $ledgerKey := include "claimcheck.kept" (dict "ctx" . "secret" $names.producer "key" "CLAIMCHECK_LEDGER_SIGNING_KEY" "value" .Values.credentials.ledgerKey "new" (printf "k1:%s" (randAlphaNum 40))) }}
{{- $ledgerVerify := without (concat (list $ledgerKey) (splitList "," (default "" .Values.credentials.ledgerVerifyKeys))) "" }}
{{- $tokens := include "claimcheck.kept" (dict "ctx" . "secret" $names.coordinator "key" "CLAIMCHECK_CONTROL_TOKENS" "value" .Values.credentials.controlTokens "new" (randAlphaNum 48)) }}
{{- $prefix := .Values.broker.userPrefix }}
{{- $common := dict
  "CLAIMCHECK_S3_ENDPOINT_URL" (get $x "CLAIMCHECK_S3_ENDPOINT_URL")
  "CLAIMCHECK_S3_REGION" (get $x "CLAIMCHECK_S3_REGION")
  "CLAIMCHECK_S3_BUCKET" (get $x "CLAIMCHECK_S3_BUCKET")
  "CLAIMCHECK_COORDINATOR_URL" (include "claimcheck.coordinator.url" .)
  "CLAIMCHECK_COORDINATOR_SHARDS" (toString .Values.coordinator.shards)
  "CLAIMCHECK_LOG_LEVEL" $c.logLevel }}
{{- $brokerUsers := list }}
{{- /* producer */}}
{{- $pw := include "claimcheck.brokerPassword" (dict "ctx" . "secret" $names.producer "value" .Values.broker.producerPassword) }}
{{- $brokerUsers = append $brokerUsers (printf "producer=%sproducer:%s" $prefix $pw) }}
{{- $producer := merge (dict
  "CLAIMCHECK_AMQP_URL" (include "claimcheck.amqpUrl" (dict "endpoint" $endpoint "user" (printf "%sproducer" $prefix) "password" $pw))
  "CLAIMCHECK_S3_ACCESS_KEY_ID" (get $x "CLAIMCHECK_S3_PRODUCER_ACCESS_KEY_ID")
  "CLAIMCHECK_S3_SECRET_ACCESS_KEY" (get $x "CLAIMCHECK_S3_PRODUCER_SECRET_ACCESS_KEY")
  "CLAIMCHECK_POINTER_SIGNING_KEY" $signing
  "CLAIMCHECK_LEDGER_SIGNING_KEY" $ledgerKey) (deepCopy $common) }}
{{- /* recipient groups */}}
{{- $recipients := dict }}
{{- $ackVerify := list }}
{{- range .Values.recipients }}
{{- $group := .name }}
{{- $secret := include "claimcheck.roleSecret" (dict "ctx" $ "role" (printf "recipient-%s" .name)) }}
{{- $user := printf "%srecipient-%s" $prefix .name }}
{{- $gpw := include "claimcheck.brokerPassword" (dict "ctx" $ "secret" $secret "value" .brokerPassword) }}
{{- $brokerUsers = append $brokerUsers (printf "recipient.%s=%s:%s" .name $user $gpw) }}
{{- $ack := include "claimcheck.kept" (dict "ctx" $ "secret" $secret "key" "CLAIMCHECK_ACK_SIGNING_KEY" "value" .ackKey "new" (printf "k1:%s" (randAlphaNum 40))) }}
{{- $ackVerify = append $ackVerify (printf "%s:%s" .name $ack) }}
{{- range splitList "," (default "" .ackVerifyKeys) }}
{{- if . }}{{- $ackVerify = append $ackVerify (printf "%s:%s" $group .) }}{{- end }}
{{- end }}
{{- $_ := set $recipients .name (merge (dict
  "CLAIMCHECK_AMQP_URL" (include "claimcheck.amqpUrl" (dict "endpoint" $endpoint "user" $user "password" $gpw))
  "CLAIMCHECK_S3_ACCESS_KEY_ID" (get $x "CLAIMCHECK_S3_CONSUMER_ACCESS_KEY_ID")
  "CLAIMCHECK_S3_SECRET_ACCESS_KEY" (get $x "CLAIMCHECK_S3_CONSUMER_SECRET_ACCESS_KEY")
  "CLAIMCHECK_POINTER_VERIFY_KEYS" $verify
  "CLAIMCHECK_ACK_SIGNING_KEY" $ack) (deepCopy $common)) }}
{{- end }}
{{- /* coordinator */}}
{{- $cpw := include "claimcheck.brokerPassword" (dict "ctx" . "secret" $names.coordinator "value" .Values.broker.coordinatorPassword) }}
{{- $brokerUsers = append $brokerUsers (printf "coordinator=%scoordinator:%s" $prefix $cpw) }}
{{- $coordinator := merge (dict
  "CLAIMCHECK_AMQP_URL" (include "claimcheck.amqpUrl" (dict "endpoint" $endpoint "user" (printf "%scoordinator" $prefix) "password" $cpw))
  "CLAIMCHECK_S3_ACCESS_KEY_ID" (get $x "CLAIMCHECK_S3_COORDINATOR_ACCESS_KEY_ID")
  "CLAIMCHECK_S3_SECRET_ACCESS_KEY" (get $x "CLAIMCHECK_S3_COORDINATOR_SECRET_ACCESS_KEY")
  "CLAIMCHECK_DATABASE_URL" (get $x "CLAIMCHECK_DATABASE_URL")
  "CLAIMCHECK_POINTER_VERIFY_KEYS" $verify
  "CLAIMCHECK_ACK_VERIFY_KEYS" (join "," $ackVerify)
  "CLAIMCHECK_COORDINATOR_KEY" $coordKey
  "CLAIMCHECK_LEDGER_VERIFY_KEYS" (join "," $ledgerVerify)
  "CLAIMCHECK_CONTROL_TOKENS" $tokens
  "CLAIMCHECK_HTTP_HOST" $c.httpHost
  "CLAIMCHECK_HTTP_PORT" (toString $c.httpPort)) (deepCopy $common) }}
{{- $out := dict
  "producer" $producer
  "coordinator" $coordinator
  "recipients" $recipients
  "operator" (dict "CLAIMCHECK_CONTROL_TOKEN" (index (splitList "," $tokens) 0))
  "reader" (dict "CLAIMCHECK_DATABASE_URL" (get $x "CLAIMCHECK_DATABASE_READER_URL") "CLAIMCHECK_LOG_LEVEL" $c.logLevel)
  "provision" (dict
    "CLAIMCHECK_AMQP_URL" (get $x "CLAIMCHECK_AMQP_ADMIN_URL")
    "CLAIMCHECK_MANAGEMENT_URL" (get $x "CLAIMCHECK_MANAGEMENT_URL")
    "CLAIMCHECK_BROKER_USERS" (join "," $brokerUsers)
    "CLAIMCHECK_COORDINATOR_SHARDS" (toString .Values.coordinator.shards)
    "CLAIMCHECK_LOG_LEVEL" $c.logLevel) }}
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

{{/* The configured recipient group names, as a JSON list. */}}
{{- define "claimcheck.recipientNames" -}}
{{- $names := list }}
{{- range .Values.recipients }}{{- $names = append $names .name }}{{- end }}
{{- toJson $names }}
{{- end }}

{{/* Names of the chart's imagePullSecrets, as a JSON list (the operator gives them to the Jobs). */}}
{{- define "claimcheck.pullSecretNames" -}}
{{- $names := list }}
{{- range .Values.imagePullSecrets }}{{- $names = append $names .name }}{{- end }}
{{- toJson $names }}
{{- end }}
