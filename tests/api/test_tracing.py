"""Tracing in-process (frontend/tracing.py): the app with MODELGATE_TRACING on exports its spans to
opentelemetry-sdk's InMemorySpanExporter; the backend is the FakeBackend, recording the trace context
TritonBackend would put in each call's gRPC metadata (tests/unit/test_tracing.py shows that it does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from frontend.app import create_app
from frontend.settings import Settings
from frontend.tracing import Tracing, TracedBackend
from tests.api.conftest import FakeBackend

ROOT = Path(__file__).resolve().parents[2]

KEY = "sk-team-a-secret-value"
PROMPT_WORDS = "tell me about the purple walrus"
CHAT = {"model": "llm", "messages": [{"role": "user", "content": PROMPT_WORDS}]}
REQUEST_ID = "trace-me-1"


class RecordingBackend(FakeBackend):
    """The FakeBackend, recording for every call the metadata TritonBackend would add to it: the trace context
    current when the call starts (Tracing.triton_metadata, TritonBackend's `trace_metadata`)."""

    def __init__(self):
        super().__init__()
        self.metadata: list[tuple[str, dict[str, str]]] = []

    async def infer(self, model, inputs, outputs, request_id=""):
        self.metadata.append((model, Tracing.triton_metadata()))
        return await super().infer(model, inputs, outputs, request_id)

    async def stream(self, model, inputs, outputs, request_id=""):
        self.metadata.append((model, Tracing.triton_metadata()))
        async for response in super().stream(model, inputs, outputs, request_id):
            yield response


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def recording() -> RecordingBackend:
    return RecordingBackend()


@pytest.fixture
async def traced(recording, spans):
    settings = Settings(_env_file=None, model_index_ttl_s=0, tracing=True, api_keys=f"team-a={KEY}")
    app = create_app(settings, backend=recording, span_exporter=spans)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                     headers={"Authorization": f"Bearer {KEY}"}) as client:
            yield client


def by_kind(spans: InMemorySpanExporter, kind: SpanKind) -> list:
    return [s for s in spans.get_finished_spans() if s.kind == kind]


def traceparent(span) -> str:
    """W3C traceparent of a sampled span (flags: sampled, and the trace id's `random` bit if set)."""
    assert span.context.trace_flags.sampled
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{span.context.trace_flags:02x}"


def status(span) -> int:
    """The HTTP status under the old or the new semantic conventions (OTEL_SEMCONV_STABILITY_OPT_IN)."""
    return span.attributes.get("http.status_code", span.attributes.get("http.response.status_code"))


def every_value(spans: InMemorySpanExporter) -> str:
    """Every span's name, attributes and events as one text, to look for what must never be in a span."""
    parts = []
    for span in spans.get_finished_spans():
        parts += [span.name, json.dumps(dict(span.attributes), default=str)]
        parts += [json.dumps(dict(e.attributes or {}), default=str) for e in span.events]
    return "\n".join(parts)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_chat_request_is_a_server_span_with_its_triton_call_as_child(traced, recording, spans,
                                                                              stream):
    r = await traced.post("/v1/chat/completions", json={**CHAT, "stream": stream},
                          headers={"x-request-id": REQUEST_ID})
    assert r.status_code == 200, r.text
    [server] = by_kind(spans, SpanKind.SERVER)
    [call] = by_kind(spans, SpanKind.CLIENT)
    assert server.name == "POST /v1/chat/completions" and call.name == "triton.stream llm"
    assert call.context.trace_id == server.context.trace_id
    assert call.parent.span_id == server.context.span_id
    assert server.attributes["modelgate.request_id"] == REQUEST_ID
    assert server.attributes["modelgate.api_key.name"] == "team-a"
    assert server.attributes["modelgate.model"] == "llm"
    assert server.attributes["gen_ai.usage.output_tokens"] == 5
    assert server.attributes["gen_ai.usage.input_tokens"] > 0
    assert status(server) == 200
    assert call.attributes["modelgate.model"] == "llm"
    assert call.attributes["modelgate.request_id"] == REQUEST_ID
    assert call.attributes["rpc.method"] == "ModelStreamInfer"
    assert call.attributes["modelgate.triton.responses"] >= 1 and call.events[0].name == "first response"
    assert call.status.status_code == StatusCode.UNSET
    # What Triton is sent: the Triton call span's own context, so Triton's spans are its children.
    assert recording.metadata == [("llm", {"traceparent": traceparent(call)})]
    text = every_value(spans)
    assert KEY not in text and "purple walrus" not in text and "Bearer" not in text


async def test_each_embeddings_call_is_a_child_span_with_its_own_traceparent(traced, recording, spans):
    r = await traced.post("/v1/embeddings", json={"model": "emb", "input": ["one", "two", "three"]})
    assert r.status_code == 200, r.text
    [server] = by_kind(spans, SpanKind.SERVER)
    calls = by_kind(spans, SpanKind.CLIENT)
    assert len(calls) == 2  # the model takes two inputs per request: two Triton calls
    assert {c.name for c in calls} == {"triton.infer emb"}
    assert {c.parent.span_id for c in calls} == {server.context.span_id}
    assert sorted(m["traceparent"] for _, m in recording.metadata) == sorted(traceparent(c) for c in calls)
    assert server.attributes["modelgate.request_id"] == r.headers["x-request-id"]


async def test_a_failed_triton_call_is_an_error_span_by_code_without_its_message(traced, spans):
    long = {"model": "llm", "messages": [{"role": "user", "content": "walrus " * 80}]}
    r = await traced.post("/v1/chat/completions", json=long)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    [server] = by_kind(spans, SpanKind.SERVER)
    [call] = by_kind(spans, SpanKind.CLIENT)
    assert call.status.status_code == StatusCode.ERROR
    assert call.attributes["error.type"] == "context_length_exceeded"
    assert call.parent.span_id == server.context.span_id
    assert status(server) == 400
    assert "maximum context length" not in every_value(spans) and not call.events


async def test_a_callers_sampled_trace_continues_and_an_unsampled_one_reaches_triton_without_context(
        traced, recording, spans):
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    sampled, not_sampled = f"00-{trace_id}-{parent}-01", f"00-{trace_id}-{parent}-00"
    r = await traced.post("/v1/chat/completions", json=CHAT, headers={"traceparent": sampled})
    assert r.status_code == 200
    [server] = by_kind(spans, SpanKind.SERVER)
    assert f"{server.context.trace_id:032x}" == trace_id and f"{server.parent.span_id:016x}" == parent
    spans.clear()
    recording.metadata.clear()
    r = await traced.post("/v1/chat/completions", json=CHAT, headers={"traceparent": not_sampled})
    assert r.status_code == 200
    assert spans.get_finished_spans() == ()  # parent-based sampling: the caller said no
    assert recording.metadata == [("llm", {})]  # and Triton, which traces whatever carries one, gets none


async def test_url_attributes_hold_the_route_never_a_signed_urls_token(traced, spans):
    token = "c2lnbmVkLXRva2VuLXRoYXQtaXMtYS1jcmVkZW50aWFs"
    r = await traced.get(f"/v1/images/files/{token}?sig=also-secret")
    assert r.status_code == 404
    [server] = by_kind(spans, SpanKind.SERVER)
    assert server.name == "GET /v1/images/files/{token}"
    paths = [v for k, v in server.attributes.items() if k in ("http.target", "url.path")]  # old or new names
    urls = [v for k, v in server.attributes.items() if k in ("http.url", "url.full")]
    assert paths and set(paths) == {"/v1/images/files/{token}"}
    assert all(u.endswith("/v1/images/files/{token}") for u in urls)  # (new conventions: no full URL)
    text = every_value(spans)
    assert token not in text and "also-secret" not in text


async def test_probes_and_metrics_are_not_traced(traced, spans):
    for path in ("/health", "/health/ready", "/metrics"):
        assert (await traced.get(path)).status_code == 200
    assert spans.get_finished_spans() == ()


async def test_off_by_default_the_backend_is_not_wrapped_and_nothing_is_instrumented(spans):
    backend = FakeBackend()
    app = create_app(Settings(_env_file=None), backend=backend)
    async with app.router.lifespan_context(app):
        assert app.state.services.backend is backend and not isinstance(backend, TracedBackend)
        assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
    on = create_app(Settings(_env_file=None, tracing=True), backend=FakeBackend(), span_exporter=spans)
    assert getattr(on, "_is_instrumented_by_opentelemetry", False)  # what the check above would see


PROBE = """
import asyncio, json, sys, threading
import httpx
from frontend.app import create_app
from frontend.settings import Settings
from tests.api.conftest import FakeBackend

async def main():
    app = create_app(Settings(_env_file=None), backend=FakeBackend())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.post("/v1/embeddings", json={"model": "emb", "input": "hi"})
            assert r.status_code == 200
        threads = [t.name for t in threading.enumerate()]
    prefixes = ("frontend.tracing", "opentelemetry.sdk.trace", "opentelemetry.instrumentation",
                "opentelemetry.exporter")
    modules = sorted(m for m in sys.modules if m.startswith(prefixes))
    print(json.dumps({"modules": modules, "threads": threads}))

asyncio.run(main())
"""


@pytest.mark.parametrize("tracing", ["", "true"])
def test_off_no_tracing_code_is_imported_and_no_export_thread_runs(tracing):
    """In a fresh interpreter (this one has imported the SDK for the tests above): the default app, then the
    same with MODELGATE_TRACING=true, which shows what the check would see."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELGATE_", "OTEL_"))}
    env.update({"MODELGATE_TRACING": tracing, "OTEL_TRACES_EXPORTER": "console"} if tracing else {})
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    exporting = [t for t in seen["threads"] if t.startswith("OtelBatch")]
    if tracing:
        assert "frontend.tracing" in seen["modules"] and exporting
    else:
        assert seen["modules"] == [] and exporting == []
