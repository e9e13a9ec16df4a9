{{/*
Shared definitions. Component templates call them with a context dict:
  (dict "root" $ "component" "command-api")
where component is one of command-api, query-api, projector (workloads) or
migrate, test (the Job and the helm test Pod).
*/}}

{{/* Chart name. */}}
{{- define "sparkle.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-wide name prefix (63 chars max). */}}
{{- define "sparkle.fullname" -}}
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
Name of a component's resources: <fullname>-<component>. The prefix, not the
suffix, is truncated, so two components never collapse into one name.
*/}}
{{- define "sparkle.componentFullname" -}}
{{- $suffix := printf "-%s" .component }}
{{- $prefix := include "sparkle.fullname" .root | trunc (int (sub 63 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s%s" $prefix $suffix }}
{{- end }}

{{/* chart label value. */}}
{{- define "sparkle.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The values key of a component. */}}
{{- define "sparkle.valuesKey" -}}
{{- $keys := dict "command-api" "commandApi" "query-api" "queryApi" "projector" "projector" "migrate" "migrations" "test" "tests" }}
{{- required (printf "unknown component %q" .component) (get $keys .component) }}
{{- end }}

{{/* The values of a component. */}}
{{- define "sparkle.componentValues" -}}
{{- toYaml (index .root.Values (include "sparkle.valuesKey" .)) }}
{{- end }}

{{/*
Selector labels: stable for the life of the release (spec.selector is
immutable), so no version and no chart label. Without .component they select
every pod of the release.
*/}}
{{- define "sparkle.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sparkle.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/* The image tag of a component (also its version label); migrate runs the command-api image. */}}
{{- define "sparkle.imageTag" -}}
{{- $keys := dict "command-api" "commandApi" "query-api" "queryApi" "projector" "projector" "migrate" "commandApi" }}
{{- $key := get $keys (.component | default "") }}
{{- $tag := "" }}
{{- if $key }}{{ $tag = (index .root.Values $key).image.tag }}{{ end }}
{{- $tag | default .root.Values.image.tag | default .root.Chart.AppVersion | toString }}
{{- end }}

{{/* Common labels of every resource. */}}
{{- define "sparkle.labels" -}}
helm.sh/chart: {{ include "sparkle.chart" .root }}
{{ include "sparkle.selectorLabels" . }}
app.kubernetes.io/version: {{ regexReplaceAll "[^-A-Za-z0-9_.]" (include "sparkle.imageTag" .) "_" | trunc 63 | trimSuffix "-" | trimSuffix "_" | trimSuffix "." | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: sparkle-community
{{- with .root.Values.global.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Image reference of a workload component (command-api, query-api, projector):
[registry/]repository:tag[@digest].
*/}}
{{- define "sparkle.image" -}}
{{- $img := (index .root.Values (include "sparkle.valuesKey" .)).image }}
{{- $registry := .root.Values.image.registry | trimSuffix "/" }}
{{- $repo := ternary (printf "%s/%s" $registry $img.repository) $img.repository (ne $registry "") }}
{{- $ref := printf "%s:%s" $repo (include "sparkle.imageTag" .) }}
{{- if $img.digest }}{{ printf "%s@%s" $ref $img.digest }}{{ else }}{{ $ref }}{{ end }}
{{- end }}

{{- define "sparkle.imagePullPolicy" -}}
{{- (index .root.Values (include "sparkle.valuesKey" .)).image.pullPolicy | default .root.Values.image.pullPolicy }}
{{- end }}

{{/* ServiceAccount used by the release's pods. */}}
{{- define "sparkle.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sparkle.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The migration Job runs before the release's own ServiceAccount and Secret
exist (pre-install hook), so when it is a hook it uses hook copies of them.
*/}}
{{- define "sparkle.migrationHookResources" -}}
{{- if and .Values.migrations.enabled .Values.migrations.asHook }}true{{ end }}
{{- end }}

{{- define "sparkle.migrationServiceAccountName" -}}
{{- if and (include "sparkle.migrationHookResources" .) .Values.serviceAccount.create }}
{{- printf "%s-migrate" (include "sparkle.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- include "sparkle.serviceAccountName" . }}
{{- end }}
{{- end }}

{{/* Helm + Argo CD hook annotations of the migration resources; weight is an int. */}}
{{- define "sparkle.hookAnnotations" -}}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: {{ .weight | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
argocd.argoproj.io/hook: PreSync
argocd.argoproj.io/hook-delete-policy: BeforeHookCreation
argocd.argoproj.io/sync-wave: {{ .weight | quote }}
{{- end }}

{{/* ---------------------------------------------------------------- secrets */}}

{{- define "sparkle.secretName" -}}
{{- printf "%s-credentials" (include "sparkle.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sparkle.migrationSecretName" -}}
{{- printf "%s-migrate-credentials" (include "sparkle.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The three credentials: values key, key in the chart-managed Secret, the value
holding the plain text, and what to say when none is given.
*/}}
{{- define "sparkle.credentials" -}}
postgresql:
  key: database-url
  plain: url
  missing: "postgresql.url or postgresql.existingSecret is required (the Postgres URL for command-api, projector and the migration Job)"
redis:
  key: redis-url
  plain: url
  missing: "redis.url or redis.existingSecret is required (the Redis URL for all three components)"
auth:
  key: jwt-secret
  plain: jwtSecret
  missing: "auth.jwtSecret or auth.existingSecret is required (the HS256 key that signs bearer tokens)"
{{- end }}

{{/*
data: of a chart-managed Secret: the credentials given as plain values.
Called with the root context (all three) or (dict "root" $ "only" (list …)).
*/}}
{{- define "sparkle.credentialsData" -}}
{{- $root := .root | default . }}
{{- $names := .only | default (list "postgresql" "redis" "auth") }}
{{- $creds := include "sparkle.credentials" $root | fromYaml }}
{{- range $name := $names }}
{{- $c := index $creds $name }}
{{- $cfg := index $root.Values $name }}
{{- if and (not $cfg.existingSecret) (index $cfg $c.plain) }}
{{ $c.key }}: {{ index $cfg $c.plain | b64enc }}
{{- end }}
{{- end }}
{{- end }}

{{/*
secretKeyRef of a credential: (dict "root" $ "name" "postgresql" "hook" bool).
Fails with a clear message when the credential is not configured.
*/}}
{{- define "sparkle.secretKeyRef" -}}
{{- include "sparkle.validateValues" .root }}
{{- $c := index (include "sparkle.credentials" .root | fromYaml) .name }}
{{- $cfg := index .root.Values .name }}
{{- if $cfg.existingSecret }}
name: {{ $cfg.existingSecret }}
key: {{ $cfg.existingSecretKey }}
{{- else }}
{{- $_ := required $c.missing (index $cfg $c.plain) }}
name: {{ ternary (include "sparkle.migrationSecretName" .root) (include "sparkle.secretName" .root) (eq .hook true) }}
key: {{ $c.key }}
{{- end }}
{{- end }}

{{/*
Checksum of the chart-managed credentials a component reads, as a pod
annotation: changing one of them rolls exactly the pods that use it.
(dict "root" $ "component" "query-api")
*/}}
{{- define "sparkle.credentialsChecksum" -}}
{{- $uses := dict "command-api" (list "postgresql" "redis" "auth") "projector" (list "postgresql" "redis") }}
{{- $_ := set $uses "query-api" (ternary (list "redis" "auth") (list "redis") (eq .root.Values.queryApi.personalize true)) }}
{{- include "sparkle.credentialsData" (dict "root" .root "only" (get $uses .component)) | sha256sum }}
{{- end }}

{{/* ---------------------------------------------------------------- env */}}

{{/* An env var from a credential. (dict "root" "env" "name" "hook") */}}
{{- define "sparkle.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      {{- include "sparkle.secretKeyRef" . | trim | nindent 6 }}
{{- end }}

{{/*
Environment of a component; the variable names are the services' contract
(CONTRACT.md §2). (dict "root" $ "component" "command-api" "hook" false "otel" true)
*/}}
{{- define "sparkle.env" -}}
{{- $root := .root }}
{{- $appComponent := ternary "command-api" .component (eq .component "migrate") }}
{{- $v := index $root.Values (include "sparkle.valuesKey" (dict "root" $root "component" $appComponent)) }}
{{- $own := index $root.Values (include "sparkle.valuesKey" .) }}
{{- $hook := eq .hook true }}
{{- $otel := and (eq .otel true) $root.Values.otel.endpoint }}
{{- if eq .component "migrate" }}
{{- /* `command-api migrate` reads only the database settings (least privilege). */}}
{{- include "sparkle.secretEnv" (dict "root" $root "env" "DATABASE_URL" "name" "postgresql" "hook" $hook) | nindent 0 }}
- name: MIGRATE_WAIT_SECS
  value: {{ $root.Values.migrations.waitSeconds | quote }}
- name: RUST_LOG
  value: {{ $own.logLevel | default $root.Values.logging.level | quote }}
- name: LOG_FORMAT
  value: {{ $root.Values.logging.format | quote }}
{{- else }}
{{- if and $otel $root.Values.otel.kubernetesAttributes }}
- name: K8S_NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
{{- include "sparkle.secretEnv" (dict "root" $root "env" "REDIS_URL" "name" "redis" "hook" $hook) | nindent 0 }}
{{- if ne $appComponent "query-api" }}
{{- include "sparkle.secretEnv" (dict "root" $root "env" "DATABASE_URL" "name" "postgresql" "hook" $hook) | nindent 0 }}
{{- end }}
- name: ADMIN_ADDR
  value: {{ printf "0.0.0.0:%v" $v.containerPorts.admin | quote }}
- name: RUST_LOG
  value: {{ $own.logLevel | default $root.Values.logging.level | quote }}
- name: LOG_FORMAT
  value: {{ $root.Values.logging.format | quote }}
{{- if eq $appComponent "command-api" }}
- name: HTTP_ADDR
  value: {{ printf "0.0.0.0:%v" $v.containerPorts.http | quote }}
{{- include "sparkle.secretEnv" (dict "root" $root "env" "AUTH_JWT_SECRET" "name" "auth" "hook" $hook) | nindent 0 }}
{{- include "sparkle.authClaimsEnv" $root }}
{{- with $v.databaseMaxConnections }}
- name: DATABASE_MAX_CONNECTIONS
  value: {{ . | quote }}
{{- end }}
{{- else if eq $appComponent "query-api" }}
- name: HTTP_ADDR
  value: {{ printf "0.0.0.0:%v" $v.containerPorts.http | quote }}
{{- if $v.personalize }}
{{- include "sparkle.secretEnv" (dict "root" $root "env" "AUTH_JWT_SECRET" "name" "auth" "hook" $hook) | nindent 0 }}
{{- include "sparkle.authClaimsEnv" $root }}
{{- end }}
- name: CONSISTENCY_WAIT_MS
  value: {{ $v.consistencyWaitMs | quote }}
{{- else if eq $appComponent "projector" }}
- name: PROJECTOR_CONSUMER
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: FEED_GLOBAL_LIMIT
  value: {{ $v.feedGlobalLimit | quote }}
- name: FEED_AUTHOR_LIMIT
  value: {{ $v.feedAuthorLimit | quote }}
{{- with $v.databaseMaxConnections }}
- name: DATABASE_MAX_CONNECTIONS
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if not (kindIs "invalid" $v.shutdownDelayMs) }}
- name: SHUTDOWN_DELAY_MS
  value: {{ $v.shutdownDelayMs | quote }}
{{- end }}
{{- with $v.workerThreads }}
- name: WORKER_THREADS
  value: {{ . | quote }}
{{- end }}
{{- if $otel }}
{{- include "sparkle.otelEnv" . }}
{{- end }}
{{- end }}
{{- with $own.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "sparkle.authClaimsEnv" -}}
{{- with .Values.auth.issuer }}
- name: AUTH_JWT_ISSUER
  value: {{ . | quote }}
{{- end }}
{{- with .Values.auth.audience }}
- name: AUTH_JWT_AUDIENCE
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* OpenTelemetry SDK environment (the standard OTEL_* variables). */}}
{{- define "sparkle.otelEnv" -}}
{{- $root := .root }}
{{- $o := $root.Values.otel }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $o.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $o.protocol | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ .component | quote }}
{{- $attrs := list (printf "service.namespace=%s" $root.Release.Namespace) (printf "service.version=%s" (include "sparkle.imageTag" .)) }}
{{- with $o.environment }}
{{- $attrs = append $attrs (printf "deployment.environment.name=%s" .) }}
{{- end }}
{{- if $o.kubernetesAttributes }}
{{- $attrs = concat $attrs (list (printf "k8s.namespace.name=%s" $root.Release.Namespace) "k8s.pod.name=$(K8S_POD_NAME)" "k8s.node.name=$(K8S_NODE_NAME)" (printf "k8s.deployment.name=%s" (include "sparkle.componentFullname" .))) }}
{{- end }}
{{- range $k, $val := $o.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%v" $k $val) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
{{- with $o.traces.sampler }}
- name: OTEL_TRACES_SAMPLER
  value: {{ . | quote }}
{{- end }}
{{- with $o.traces.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- pods */}}

{{/* Pod-level settings shared by every pod of the chart. (dict root component v) */}}
{{- define "sparkle.podCommon" -}}
{{- $root := .root }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with $root.Values.global.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with .v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The probes of a component: all on the admin port. */}}
{{- define "sparkle.probes" -}}
startupProbe:
  httpGet:
    path: /livez
    port: admin
  {{- toYaml .v.startupProbe | nindent 2 }}
livenessProbe:
  httpGet:
    path: /livez
    port: admin
  {{- toYaml .v.livenessProbe | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  {{- toYaml .v.readinessProbe | nindent 2 }}
{{- end }}

{{/* Is the replica count owned by an autoscaler (HPA or KEDA)? "true" or "". */}}
{{- define "sparkle.autoscaled" -}}
{{- $v := index .root.Values (include "sparkle.valuesKey" .) }}
{{- if or $v.autoscaling.enabled (and (eq .component "projector") $v.keda.enabled) }}true{{ end }}
{{- end }}

{{/* Does the component have the public HTTP API? "true" or "". */}}
{{- define "sparkle.hasHttp" -}}
{{- if has .component (list "command-api" "query-api") }}true{{ end }}
{{- end }}

{{/* ---------------------------------------------------------------- routes */}}

{{/*
The REST routes, longest prefix first (CONTRACT.md §4): the feed goes to
query-api, everything else under /api/v1/community to command-api.
*/}}
{{- define "sparkle.routes" -}}
- path: /api/v1/community/feed
  component: query-api
- path: /api/v1/community
  component: command-api
{{- end }}
