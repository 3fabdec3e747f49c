"""OpenTelemetry traces: a server span per request (FastAPI's instrumentation), a client span per Triton call
as its child, and that call's W3C `traceparent` in the gRPC metadata, so Triton's own spans join the trace.

Off unless MODELGATE_TRACING=true: frontend/app.py imports this module only then, so an app without tracing
loads no instrumentation, tracing SDK or exporter and starts no export thread. Everything else is
OpenTelemetry's own environment, read by its SDK: OTEL_TRACES_EXPORTER (`otlp`, `console`, `none`),
OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_PROTOCOL (`http/protobuf` by default, as the specification
says; `grpc`), OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*,
OTEL_PROPAGATORS (how a request's own trace context is read); OTEL_SDK_DISABLED=true turns tracing off again.
The app owns its TracerProvider (not the process-wide one) and flushes it when it stops.

Spans carry route templates, the request id, the API key's name, the model, token counts and error codes;
never a path's values (a signed image URL's token is a credential), a query, a body (prompts, images), a key
or a header (captured headers, if an operator asks for them, have credentials redacted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from frontend.context import STATE_KEY
from frontend.errors import APIError
from frontend.triton import Backend, Tensors

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "modelgate-frontend"  # unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name one
# Probes and scrapes are not worth a trace (OTEL_PYTHON_FASTAPI_EXCLUDED_URLS replaces this list).
EXCLUDED_URLS = "/health,/metrics"
# Redacted even when OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST asks for every header.
CREDENTIAL_HEADERS = ["authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key"]
# Attributes of the request's server span and of each Triton call's span.
REQUEST_ID = "modelgate.request_id"
API_KEY_NAME = "modelgate.api_key.name"
MODEL = "modelgate.model"
CACHE = "modelgate.cache"
INPUT_TOKENS, OUTPUT_TOKENS = "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"
CANCELLED = "modelgate.cancelled"
RESPONSES = "modelgate.triton.responses"
# What FastAPI's instrumentation records from the request's URL: replaced by the route template.
_URL_PATHS = ("http.target", "url.path")
_URL_FULL = ("http.url", "url.full")
_UNMATCHED = "(unmatched)"
_W3C = TraceContextTextMapPropagator()  # Triton reads W3C trace context and nothing else


def enabled_by_environment() -> bool:
    """False when OTEL_SDK_DISABLED=true, which OpenTelemetry's SDKs obey before any other variable."""
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"


class RequestAttributes:
    """ASGI middleware inside ContextLayer: puts the request's id, key name, model, cache outcome and token
    counts on the server span, read from its RequestContext as the last body message leaves (the server span
    ends once it is sent), or when the app returns without one (the client left)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        span = trace.get_current_span()
        if scope["type"] != "http" or not span.is_recording():
            return await self.app(scope, receive, send)
        ctx = scope["state"][STATE_KEY]
        span.set_attribute(REQUEST_ID, ctx.request_id)

        async def annotated(message):
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                span.set_attributes(_request_attributes(ctx))
            await send(message)

        try:
            await self.app(scope, receive, annotated)
        finally:
            if span.is_recording():
                span.set_attributes(_request_attributes(ctx))


def _request_attributes(ctx) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {MODEL: ctx.model}
    if ctx.key is not None:
        attributes[API_KEY_NAME] = ctx.key.name
    if ctx.cache is not None:
        attributes[CACHE] = ctx.cache
    if ctx.usage.total_tokens:
        attributes[INPUT_TOKENS] = ctx.usage.prompt_tokens
        attributes[OUTPUT_TOKENS] = ctx.usage.completion_tokens
    return attributes


class TracedBackend:
    """A Backend whose infer and stream calls are client spans `triton.infer <model>` and
    `triton.stream <model>`, children of the request's span. The call's span is current while the inner
    backend runs, so TritonBackend's metadata (`Tracing.triton_metadata`) carries its traceparent. Other
    calls pass through."""

    def __init__(self, inner: Backend, tracer: trace.Tracer):
        self._inner = inner
        self._tracer = tracer

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    async def infer(self, model: str, inputs: Tensors, outputs: list[str], request_id: str = "") -> Tensors:
        attributes = _call_attributes("ModelInfer", model, request_id)
        with self._tracer.start_as_current_span(f"triton.infer {model}", kind=SpanKind.CLIENT,
                                                attributes=attributes, record_exception=False,
                                                set_status_on_exception=False) as span:
            try:
                return await self._inner.infer(model, inputs, outputs, request_id=request_id)
            except BaseException as exc:
                _failed(span, exc)
                raise

    async def stream(self, model: str, inputs: Tensors, outputs: list[str],
                     request_id: str = "") -> AsyncIterator[Tensors]:
        # The generator may be resumed from other tasks (a TaskGroup starts it, the response streams it): its
        # span is made current only around each step of the inner stream, never across a `yield`.
        span = self._tracer.start_span(f"triton.stream {model}", kind=SpanKind.CLIENT,
                                       attributes=_call_attributes("ModelStreamInfer", model, request_id))
        current = trace.set_span_in_context(span)
        count = 0
        calls = self._inner.stream(model, inputs, outputs, request_id=request_id)
        try:
            async with contextlib.aclosing(calls) as responses:
                while True:
                    token = otel_context.attach(current)
                    try:
                        response = await anext(responses)
                    except StopAsyncIteration:
                        break
                    finally:
                        otel_context.detach(token)
                    count += 1
                    if count == 1:
                        span.add_event("first response")
                    yield response
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            span.set_attribute(RESPONSES, count)
            span.end()


class Tracing:
    """One app's tracing: its TracerProvider, the instrumentation of the app, the traced backend."""

    request_attributes = RequestAttributes  # the ASGI middleware app.py adds inside ContextLayer

    def __init__(self, provider: TracerProvider):
        self.provider = provider
        self.tracer = provider.get_tracer("frontend")

    @classmethod
    def from_environment(cls, exporter: SpanExporter | None = None) -> "Tracing":
        """A provider configured by OTEL_* variables; `exporter` replaces OTEL_TRACES_EXPORTER's (tests),
        exporting each span as it ends."""
        provider = TracerProvider(resource=_resource())  # the sampler: OTEL_TRACES_SAMPLER(_ARG)
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            for each in _exporters():
                provider.add_span_processor(BatchSpanProcessor(each))  # OTEL_BSP_* apply
        log.info("tracing on: service %s, sampler %s, exporters %s",
                 provider.resource.attributes[SERVICE_NAME], provider.sampler.get_description(),
                 "test" if exporter is not None else os.environ.get("OTEL_TRACES_EXPORTER", "otlp"))
        return cls(provider)

    @staticmethod
    def triton_metadata() -> dict[str, str]:
        """gRPC metadata for a Triton call (TritonBackend's `trace_metadata`): the current span's
        `traceparent` (and `tracestate`), only when that span is sampled. Triton 2.51 traces every request
        that carries a traceparent, whatever its sampled flag: sending unsampled ones would trace everything
        in Triton; this way Triton's sampling is the frontend's."""
        if not trace.get_current_span().get_span_context().trace_flags.sampled:
            return {}
        carrier: dict[str, str] = {}
        _W3C.inject(carrier)
        return carrier

    def instrument(self, app: FastAPI) -> None:
        """A server span around the whole app (outside every middleware), named by route template."""
        excluded = None if _excluded_urls_set() else EXCLUDED_URLS
        asked = _env_list("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS")
        sanitize = [*asked, *CREDENTIAL_HEADERS]
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=self.provider, server_request_hook=_scrub_url, excluded_urls=excluded,
            http_capture_headers_sanitize_fields=sanitize,
            exclude_spans=["receive", "send"],  # one span per SSE chunk would drown the trace
        )

    def backend(self, inner: Backend) -> TracedBackend:
        return TracedBackend(inner, self.tracer)

    def shutdown(self) -> None:
        """Export what is still queued, then stop the export threads."""
        self.provider.shutdown()


def _call_attributes(method: str, model: str, request_id: str) -> dict[str, str]:
    return {"rpc.system": "grpc", "rpc.service": "inference.GRPCInferenceService", "rpc.method": method,
            MODEL: model, REQUEST_ID: request_id}


def _failed(span: trace.Span, exc: BaseException) -> None:
    """An APIError by its code (its message may quote the request); a cancellation (the client left) is no
    failure; anything else with its exception."""
    if isinstance(exc, (GeneratorExit, asyncio.CancelledError)):
        span.set_attribute(CANCELLED, True)
    elif isinstance(exc, APIError):
        code = exc.code or type(exc).__name__
        span.set_attribute("error.type", code)
        span.set_status(Status(StatusCode.ERROR, f"{exc.status} {code}"))
    else:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def _scrub_url(span: trace.Span, scope: dict) -> None:
    """server_request_hook: the URL attributes hold the route template, never the path's values or a query."""
    if not span.is_recording():
        return
    recorded = getattr(span, "attributes", None) or {}
    route = recorded.get("http.route") or _UNMATCHED
    for key in _URL_PATHS:
        if key in recorded:
            span.set_attribute(key, route)
    for key in _URL_FULL:
        if key in recorded:
            span.set_attribute(key, f"{scope.get('scheme', 'http')}://{_host(scope)}{route}")
    if "url.query" in recorded:
        span.set_attribute("url.query", "")


def _host(scope: dict) -> str:
    server = scope.get("server")
    return f"{server[0]}:{server[1]}" if server and server[1] is not None else (server[0] if server else "")


def _resource() -> Resource:
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


def _exporters() -> list[SpanExporter]:
    """OTEL_TRACES_EXPORTER's exporters (`otlp` by default; `none` exports nothing: spans still propagate)."""
    names = _env_list("OTEL_TRACES_EXPORTER") or ["otlp"]
    exporters = []
    for name in names:
        if name == "otlp":
            exporters.append(_otlp_exporter())
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # noqa: PLC0415

            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            raise ValueError(f"OTEL_TRACES_EXPORTER={name!r}: the frontend exports otlp, console or none")
    return exporters


def _otlp_exporter() -> SpanExporter:
    """OTLP over HTTP (protobuf; the specification's default, and what Triton speaks) or gRPC. The exporter
    reads its endpoint, headers, timeout, compression and certificates from OTEL_EXPORTER_OTLP_*."""
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    elif protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    else:
        raise ValueError(f"OTLP protocol {protocol!r}: the frontend exports http/protobuf or grpc")
    return OTLPSpanExporter()


def _env_list(name: str) -> list[str]:
    return [v.strip().lower() for v in os.environ.get(name, "").split(",") if v.strip()]


def _excluded_urls_set() -> bool:
    return any(os.environ.get(n) for n in ("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"))
