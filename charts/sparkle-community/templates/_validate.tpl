{{/*
Checks across values that values.schema.json cannot express. All failures are
reported at once, each naming the value to set. Called from secret.yaml and
from every credential reference, so the same message shows whichever
template Helm happens to render first.
*/}}
{{- define "sparkle.validateValues" -}}
{{- $errors := list }}
{{- $creds := include "sparkle.credentials" . | fromYaml }}
{{- range $name := list "postgresql" "redis" "auth" }}
{{- $c := index $creds $name }}
{{- $cfg := index $.Values $name }}
{{- if and (not $cfg.existingSecret) (not (index $cfg $c.plain)) }}
{{- $errors = append $errors $c.missing }}
{{- end }}
{{- end }}
{{- if and (not .Values.auth.existingSecret) .Values.auth.jwtSecret (lt (len .Values.auth.jwtSecret) 32) }}
{{- $errors = append $errors "auth.jwtSecret must be at least 32 characters (an HS256 key; e.g. `openssl rand -base64 48`)" }}
{{- end }}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) }}
{{- $errors = append $errors "httpRoute.parentRefs is required when httpRoute.enabled (the Gateway(s) to attach the route to)" }}
{{- end }}
{{- if and .Values.projector.keda.enabled (not .Values.projector.keda.address) }}
{{- $errors = append $errors "projector.keda.address (Redis host:port for KEDA) is required when projector.keda.enabled" }}
{{- end }}
{{- if and .Values.projector.keda.enabled .Values.projector.keda.authentication.enabled (not .Values.projector.keda.authentication.secretName) }}
{{- $errors = append $errors "projector.keda.authentication.secretName is required when projector.keda.authentication.enabled" }}
{{- end }}
{{- if $errors }}
{{- fail (printf "\n\nsparkle-community: invalid values (see ci/minimal-values.yaml for the smallest working set):\n  - %s\n" (join "\n  - " $errors)) }}
{{- end }}
{{- end }}
