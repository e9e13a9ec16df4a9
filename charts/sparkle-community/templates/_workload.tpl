{{/*
The resources every workload component has, written once and rendered from
templates/<component>/*.yaml with (dict "root" $ "component" "<name>").
The per-component differences are data: the projector has no HTTP API (no
`http` port, no Ingress backend), and the environment differs (sparkle.env).
*/}}

{{/* ---------------------------------------------------------------- Deployment */}}
{{- define "sparkle.deployment" -}}
{{- $root := .root }}
{{- $v := index $root.Values (include "sparkle.valuesKey" .) }}
{{- $hasHttp := include "sparkle.hasHttp" . }}
{{- $waitMs := add (mul (int $v.preStopSleepSeconds) 1000) (int ($v.shutdownDelayMs | default 0)) }}
{{- if ge (int $waitMs) (mul (int $v.terminationGracePeriodSeconds) 1000) }}
{{- fail (printf "%s: preStopSleepSeconds (%v s) + shutdownDelayMs (%v ms) must stay below terminationGracePeriodSeconds (%v s): the process needs time to drain afterwards" (include "sparkle.valuesKey" .) $v.preStopSleepSeconds ($v.shutdownDelayMs | default 0) $v.terminationGracePeriodSeconds) }}
{{- end }}
{{- $selector := include "sparkle.selectorLabels" . | fromYaml }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "sparkle.componentFullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "sparkle.labels" . | nindent 4 }}
  {{- with $v.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if not (include "sparkle.autoscaled" .) }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: {{ $v.revisionHistoryLimit }}
  selector:
    matchLabels:
      {{- include "sparkle.selectorLabels" . | nindent 6 }}
  {{- with $v.updateStrategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  template:
    metadata:
      labels:
        {{- include "sparkle.labels" . | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/credentials: {{ include "sparkle.credentialsChecksum" . }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "sparkle.serviceAccountName" $root }}
      {{- include "sparkle.podCommon" (dict "root" $root "v" $v) | trim | nindent 6 }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- range . }}
        - {{- toYaml (merge (deepCopy .) (dict "labelSelector" (dict "matchLabels" $selector))) | nindent 10 }}
        {{- end }}
      {{- end }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      containers:
        - name: {{ .component }}
          image: {{ include "sparkle.image" . | quote }}
          imagePullPolicy: {{ include "sparkle.imagePullPolicy" . }}
          {{- with $v.extraArgs }}
          args:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            {{- if $hasHttp }}
            - name: http
              containerPort: {{ $v.containerPorts.http }}
              protocol: TCP
            {{- end }}
            - name: admin
              containerPort: {{ $v.containerPorts.admin }}
              protocol: TCP
          env:
            {{- include "sparkle.env" (dict "root" $root "component" .component "hook" false "otel" true) | trim | nindent 12 }}
          {{- with $v.extraEnvFrom }}
          envFrom:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- include "sparkle.probes" (dict "v" $v) | nindent 10 }}
          {{- if $v.preStopSleepSeconds }}
          lifecycle:
            preStop:
              sleep:
                seconds: {{ $v.preStopSleepSeconds }}
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        # The root filesystem is read-only; /tmp is the only writable path.
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
{{- end }}

{{/* ---------------------------------------------------------------- Service */}}
{{- define "sparkle.service" -}}
{{- $root := .root }}
{{- $v := index $root.Values (include "sparkle.valuesKey" .) }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "sparkle.componentFullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "sparkle.labels" . | nindent 4 }}
  {{- with $v.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $v.service.type }}
  selector:
    {{- include "sparkle.selectorLabels" . | nindent 4 }}
  ports:
    {{- if include "sparkle.hasHttp" . }}
    - name: http
      port: {{ $v.service.httpPort }}
      targetPort: http
      protocol: TCP
      appProtocol: http
    {{- end }}
    - name: admin
      port: {{ $v.service.adminPort }}
      targetPort: admin
      protocol: TCP
      appProtocol: http
{{- end }}

{{/* ---------------------------------------------------------------- HPA */}}
{{- define "sparkle.hpa" -}}
{{- $root := .root }}
{{- $v := index $root.Values (include "sparkle.valuesKey" .) }}
{{- $keda := and (eq .component "projector") $v.keda.enabled }}
{{- if and $v.autoscaling.enabled (not $keda) }}
{{- $a := $v.autoscaling }}
{{- if and (not $a.targetCPUUtilizationPercentage) (not $a.targetMemoryUtilizationPercentage) }}
{{- fail (printf "%s.autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" (include "sparkle.valuesKey" .)) }}
{{- end }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "sparkle.componentFullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "sparkle.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "sparkle.componentFullname" . }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    {{- with $a.targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
    {{- with $a.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
  {{- with $a.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- PDB */}}
{{/* Only when the component can run more than one pod: a PDB over one pod blocks node drains. */}}
{{- define "sparkle.pdb" -}}
{{- $root := .root }}
{{- $v := index $root.Values (include "sparkle.valuesKey" .) }}
{{- $p := $v.podDisruptionBudget }}
{{- if and $p.enabled (or (gt (int $v.replicas) 1) (include "sparkle.autoscaled" .)) }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "sparkle.componentFullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "sparkle.labels" . | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" $p.minAvailable) }}
  minAvailable: {{ $p.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $p.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "sparkle.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- ServiceMonitor */}}
{{- define "sparkle.serviceMonitor" -}}
{{- $root := .root }}
{{- $sm := $root.Values.serviceMonitor }}
{{- if $sm.enabled }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "sparkle.componentFullname" . }}
  namespace: {{ $sm.namespace | default $root.Release.Namespace }}
  labels:
    {{- include "sparkle.labels" . | nindent 4 }}
    {{- with $sm.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  # The Prometheus job label is the component name (command-api, query-api, projector).
  jobLabel: app.kubernetes.io/component
  selector:
    matchLabels:
      {{- include "sparkle.selectorLabels" . | nindent 6 }}
  {{- if and $sm.namespace (ne $sm.namespace $root.Release.Namespace) }}
  namespaceSelector:
    matchNames:
      - {{ $root.Release.Namespace }}
  {{- end }}
  endpoints:
    - port: admin
      path: /metrics
      scheme: http
      interval: {{ $sm.interval }}
      scrapeTimeout: {{ $sm.scrapeTimeout }}
      honorLabels: {{ $sm.honorLabels }}
      {{- with $sm.relabelings }}
      relabelings:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $sm.metricRelabelings }}
      metricRelabelings:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- NetworkPolicy */}}
{{/*
Per component: ingress to the API port (command-api, query-api) from
networkPolicy.apiFrom (empty = anywhere), to the admin port from
networkPolicy.adminFrom; pods of this release (e.g. the helm test Pod) always
reach both. Egress, when restricted, to DNS and only the dependencies the
component uses: Postgres (command-api, projector, migrate), Redis (all but
migrate), OTLP (when otel.endpoint is set).
*/}}
{{- define "sparkle.networkPolicy" -}}
{{- $root := .root }}
{{- $np := $root.Values.networkPolicy }}
{{- if $np.enabled }}
{{- $releasePods := dict "podSelector" (dict "matchLabels" (include "sparkle.selectorLabels" (dict "root" $root) | fromYaml)) }}
{{- $isJob := eq .component "migrate" }}
{{- $usesPostgres := ne .component "query-api" }}
{{- $usesRedis := not $isJob }}
{{- $usesOtel := and $root.Values.otel.endpoint (not $isJob) }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "sparkle.componentFullname" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "sparkle.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "sparkle.selectorLabels" . | nindent 6 }}
  policyTypes:
    - Ingress
    {{- if $np.egress.enabled }}
    - Egress
    {{- end }}
  {{- if $isJob }}
  # The migration Job serves nothing.
  ingress: []
  {{- else }}
  ingress:
    {{- if include "sparkle.hasHttp" . }}
    - ports:
        - port: http
          protocol: TCP
      {{- with $np.apiFrom }}
      from:
        - {{- toYaml $releasePods | nindent 10 }}
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
    - ports:
        - port: admin
          protocol: TCP
      from:
        - {{- toYaml $releasePods | nindent 10 }}
        {{- with $np.adminFrom }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  {{- end }}
  {{- if $np.egress.enabled }}
  {{- $e := $np.egress }}
  egress:
    {{- if $e.dns.enabled }}
    - ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
      {{- with $e.dns.to }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
    {{- range $dep := list "postgresql" "redis" "otlp" }}
    {{- if or (and (eq $dep "postgresql") $usesPostgres) (and (eq $dep "redis") $usesRedis) (and (eq $dep "otlp") $usesOtel) }}
    {{- $cfg := index $e $dep }}
    - ports:
        {{- range $cfg.ports }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
      {{- with $cfg.to }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
    {{- end }}
    {{- with $e.extra }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end }}
{{- end }}
