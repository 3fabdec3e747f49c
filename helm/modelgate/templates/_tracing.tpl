{{/* OpenTelemetry tracing (values `tracing`): the frontend's OTEL_* environment and Triton's --trace-config
flags, both exporting over OTLP/HTTP to one collector. docs/operations.md, "Tracing". */}}

{{/* The collector's base URL; empty: OpenTelemetry's default, a collector on the pod's own localhost. */}}
{{- define "modelgate.tracing.endpoint" -}}
{{- default "http://localhost:4318" .Values.tracing.otlpEndpoint | trimSuffix "/" }}
{{- end }}

{{/* Frontend env (a list of EnvVar): MODELGATE_TRACING on, the rest read by OpenTelemetry's SDK. */}}
{{- define "modelgate.tracing.frontendEnv" -}}
{{- $t := .Values.tracing -}}
- {name: MODELGATE_TRACING, value: "true"}
- {name: OTEL_SERVICE_NAME, value: {{ $t.frontend.serviceName | quote }}}
- {name: OTEL_EXPORTER_OTLP_ENDPOINT, value: {{ include "modelgate.tracing.endpoint" . | quote }}}
- {name: OTEL_EXPORTER_OTLP_PROTOCOL, value: http/protobuf}
- {name: OTEL_TRACES_SAMPLER, value: {{ $t.frontend.sampler | quote }}}
- {name: OTEL_TRACES_SAMPLER_ARG, value: {{ $t.frontend.samplerArg | quote }}}
{{- with $t.frontend.env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* tritonserver flags: OpenTelemetry mode; every request that carries the frontend's traceparent is traced
(the frontend sends one only for the requests it samples), and every `rate`-th other one (0: none). */}}
{{- define "modelgate.tracing.tritonArgs" -}}
{{- $t := .Values.tracing.triton -}}
- --trace-config=mode=opentelemetry
- --trace-config=rate={{ int $t.rate }}
- --trace-config=count=-1
- --trace-config=level={{ $t.level }}
- {{ printf "--trace-config=opentelemetry,url=%s/v1/traces" (include "modelgate.tracing.endpoint" .) | quote }}
- --trace-config=opentelemetry,resource=service.name={{ $t.serviceName }}
{{- end }}
