{{/* Names: <release>-modelgate unless overridden, trimmed to the 63-character DNS limit. */}}
{{- define "modelgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "modelgate.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "modelgate.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Name of a component's objects: <fullname>-<component>. Call with (list $ "triton"). */}}
{{- define "modelgate.componentName" -}}
{{- printf "%s-%s" (include "modelgate.fullname" (index . 0)) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelgate.name" (index . 0) }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "modelgate.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
{{ include "modelgate.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* "repository:tag", the tag defaulting to the chart's appVersion. Call with (list $ .Values.x.image). */}}
{{- define "modelgate.image" -}}
{{- $image := index . 1 -}}
{{- printf "%s:%s" $image.repository (default (index . 0).Chart.AppVersion $image.tag) }}
{{- end }}

{{/* Hardened container defaults shared by every container. */}}
{{- define "modelgate.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
{{- end }}

{{/* The gRPC target for the frontend: DNS of the headless Service, one address per ready Triton pod. */}}
{{- define "modelgate.tritonGrpcUrl" -}}
{{- printf "dns:///%s:%d" (include "modelgate.componentName" (list . "triton")) (int .Values.triton.ports.grpc) }}
{{- end }}

{{/* Where Triton reads models: an object store URL, else the PVC mounted at /models. */}}
{{- define "modelgate.modelRepository" -}}
{{- default "/models" .Values.modelRepository.url }}
{{- end }}

{{- define "modelgate.pvcName" -}}
{{- default (include "modelgate.componentName" (list . "models")) .Values.modelRepository.pvc.existingClaim }}
{{- end }}

{{/* The export Job marks each finished export with a file named after the release revision. */}}
{{- define "modelgate.exportMarker" -}}
{{- printf ".modelgate-export-%d" (int .Release.Revision) }}
{{- end }}

{{/* The Secret holding `triton-api-secret` and `images-url-secret` (templates/secrets.yaml or yours). */}}
{{- define "modelgate.secretName" -}}
{{- default (include "modelgate.componentName" (list . "secrets")) .Values.secrets.existingSecret }}
{{- end }}

{{/* Env var from a key of that Secret: call with (list $ "MODELGATE_X" "key"). */}}
{{- define "modelgate.secretEnv" -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef: {name: {{ include "modelgate.secretName" (index . 0) }}, key: {{ index . 2 }}}
{{- end }}

{{/* Triton's `<protocols>:<header>=<value>` rule, as launcher.triton.restricted_flags writes it: what changes
or reveals the server needs the header; health, metadata and inference stay open. Kubernetes expands
$(MODELGATE_TRITON_API_SECRET) from the container's env. */}}
{{- define "modelgate.tritonRestriction" -}}
model-repository,model-config,shared-memory,statistics,trace,logging:modelgate-triton-key=$(MODELGATE_TRITON_API_SECRET)
{{- end }}

{{/* "true" when the chart runs its own Redis: enabled, and no frontend.redisUrl given. */}}
{{- define "modelgate.bundledRedis" -}}
{{- if and .Values.redis.enabled (not .Values.frontend.redisUrl) }}true{{ end }}
{{- end }}

{{- define "modelgate.apiKeysSecret" -}}
{{- default (include "modelgate.componentName" (list . "api-keys")) .Values.frontend.apiKeys.existingSecret }}
{{- end }}

{{/* httpGet probe: call with (list "/path" "port-name" .Values.x.someProbe). */}}
{{- define "modelgate.httpProbe" -}}
httpGet:
  path: {{ index . 0 }}
  port: {{ index . 1 }}
{{ toYaml (index . 2) }}
{{- end }}
