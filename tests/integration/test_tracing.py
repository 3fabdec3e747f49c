"""Triton joins the frontend's traces, end to end: a tritonserver of this module's own in OpenTelemetry mode
(launcher.triton.trace_flags, as the chart sets them) and the frontend (MODELGATE_TRACING, OTLP/HTTP from the
OTEL_* variables) export to one in-process collector; Triton's spans are children of the frontend's Triton
call span, and a request the frontend does not sample is not traced by Triton either."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from export_scripts.__main__ import main as export_main
from frontend.settings import Settings
from launcher.triton import TritonServer, free_port
from tests.conftest import REPOSITORY
from tests.integration import llm_tiny
from tests.stack import run_frontend

pytestmark = pytest.mark.integration

CHAT_MODEL = llm_tiny.NAME
EMBEDDINGS = ["all-minilm-l6-v2", "all-minilm-l6-v2_tokenizer", "all-minilm-l6-v2_encoder"]


@dataclass
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict


class Collector:
    """An OTLP/HTTP trace receiver: protobuf (the frontend's Python exporter) or JSON (Triton's C++ one)."""

    def __init__(self):
        self.spans: list[Span] = []
        self.errors: list[str] = []  # exports this collector could not read (a test fails on any)
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["content-length"]))
                try:
                    parsed = (collector._json(json.loads(body)) if "json" in self.headers["content-type"]
                              else collector._protobuf(ExportTraceServiceRequest.FromString(body)))
                except Exception as exc:  # noqa: BLE001 - kept for the test's message; the batch is not lost
                    parsed = []
                    collector.errors.append(f"{type(exc).__name__}: {exc}; body {body[:300]!r}")
                with collector.lock:
                    collector.spans += parsed
                self.send_response(200)
                self.send_header("content-type", self.headers["content-type"])
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    @staticmethod
    def _protobuf(request) -> list[Span]:
        spans = []
        for resource in request.resource_spans:
            service = next(a.value.string_value for a in resource.resource.attributes
                           if a.key == "service.name")
            for scope in resource.scope_spans:
                for s in scope.spans:
                    attributes = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in s.attributes}
                    spans.append(Span(service, s.name, s.trace_id.hex(), s.span_id.hex(),
                                      s.parent_span_id.hex(), attributes))
        return spans

    @staticmethod
    def _json(request: dict) -> list[Span]:
        def value(v: dict):  # OTLP JSON: {"stringValue": ...}, {"intValue": ...}; an empty value is allowed
            return next(iter(v.values()), None)

        spans = []
        for resource in request["resourceSpans"]:
            service = next(value(a["value"]) for a in resource["resource"]["attributes"]
                           if a["key"] == "service.name")
            for scope in resource["scopeSpans"]:
                for s in scope["spans"]:
                    attributes = {a["key"]: value(a["value"]) for a in s.get("attributes", [])}
                    spans.append(Span(service, s["name"], s["traceId"].lower(), s["spanId"].lower(),
                                      s.get("parentSpanId", "").lower(), attributes))
        return spans

    def of_trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def triton_spans(self, request_id: str) -> list[Span]:
        """Triton's spans of the traces that hold a Triton span of this request id."""
        with self.lock:
            traces = {s.trace_id for s in self.spans if s.attributes.get("triton.request_id") == request_id}
            return [s for s in self.spans if s.trace_id in traces and s.service == "modelgate-triton"]

    @contextmanager
    def running(self) -> Iterator[Collector]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture(scope="module")
def collector():
    with Collector().running() as running:
        yield running


@pytest.fixture(scope="module")
def triton(tmp_path_factory, collector):
    """The tiny chat model and the embeddings ensemble, Triton tracing in OpenTelemetry mode."""
    assert export_main(["embeddings", f"--repository={REPOSITORY}"]) == 0
    root = tmp_path_factory.mktemp("tracing")
    llm_tiny.model_repository(root)
    for name in EMBEDDINGS:
        (root / name).symlink_to(REPOSITORY / name, target_is_directory=True)
    with TritonServer(root, [CHAT_MODEL, *EMBEDDINGS], run_dir=root / ".run",
                      trace_url=f"{collector.url}/v1/traces",
                      extra_args=["--trace-config=opentelemetry,bsp_schedule_delay=100"]) as server:
        yield server


@pytest.fixture(scope="module")
def frontend(triton, collector):
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
           "OTEL_TRACES_EXPORTER": "otlp", "OTEL_BSP_SCHEDULE_DELAY": "50",
           "OTEL_TRACES_SAMPLER": "parentbased_always_on"}
    with pytest.MonkeyPatch.context() as patch:
        for name in ("OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
                     "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        with run_frontend(Settings(_env_file=None, triton_grpc_url=triton.grpc_url, tracing=True,
                                   cache_enabled=False)) as running:
            yield running


def wait_for(check, timeout_s: float = 60.0):  # Triton exports from its own thread: slow on a busy 2-core box
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"nothing after {timeout_s}s: {check.__doc__}"  # see collector.errors
        time.sleep(0.1)
    return found


def assert_triton_joins_the_frontends_trace(collector: Collector, request_id: str, call_name: str,
                                            model: str, also: tuple[str, ...] = ()) -> list[Span]:
    """`also`: models whose spans must be in the trace too (an ensemble's steps)."""
    def triton_spans():
        """Triton's spans of the request"""
        assert collector.errors == []  # an export the collector could not read: say so, not "nothing came"
        return collector.triton_spans(request_id)

    triton = wait_for(triton_spans)
    trace_id = triton[0].trace_id

    def frontend_spans():
        """the frontend's server span and Triton call span of the trace"""
        spans = {s.name: s for s in collector.of_trace(trace_id) if s.service == "modelgate-frontend"}
        server = next((s for name, s in spans.items() if name.startswith("POST /v1/")), None)
        return (server, spans[call_name]) if server and call_name in spans else None

    server, call = wait_for(frontend_spans)
    assert call.parent_id == server.span_id and server.attributes["modelgate.request_id"] == request_id

    def whole():
        """Triton's spans of the request, down from its root (Triton exports them in batches, as they end)"""
        spans = triton_spans()
        ids = {s.span_id for s in spans} | {call.span_id}
        rooted = any(s.parent_id == call.span_id for s in spans) and all(s.parent_id in ids for s in spans)
        return spans if rooted and {model, *also} <= {s.attributes.get("triton.model_name") for s in spans} else None

    if also:  # an ensemble: Triton 2.51 sometimes never exports some of its spans (1 run in 4 here, not
        # understood yet): its steps must be in the frontend's trace, each below a span of that trace
        def steps():
            """the ensemble's steps' spans, in the frontend's trace"""
            spans = triton_spans()
            return spans if set(also) <= {s.attributes.get("triton.model_name") for s in spans} else None

        triton = wait_for(steps)
        assert {s.trace_id for s in triton} == {trace_id} and all(s.parent_id for s in triton)
        return triton
    triton = wait_for(whole)
    # Triton's root span is a child of the frontend's call span; the rest hang below it, in the same trace.
    roots = [s for s in triton if s.parent_id == call.span_id]
    assert len(roots) == 1, [(s.name, s.parent_id) for s in triton]
    ids = {s.span_id for s in triton} | {call.span_id}
    assert all(s.parent_id in ids for s in triton)
    assert any(s.attributes.get("triton.model_name") == model for s in triton)
    return triton


def test_a_chat_streams_triton_spans_are_children_of_the_frontends_call(frontend, collector):
    request_id = f"chat-{uuid.uuid4().hex[:8]}"
    r = httpx.post(f"{frontend.url}/v1/chat/completions", timeout=120, headers={"x-request-id": request_id},
                   json={"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}],
                         "max_tokens": 4, "stream": True})
    assert r.status_code == 200 and "[DONE]" in r.text
    assert_triton_joins_the_frontends_trace(collector, request_id, f"triton.stream {CHAT_MODEL}", CHAT_MODEL)


def test_an_embeddings_ensembles_triton_spans_are_children_of_the_frontends_call(frontend, collector):
    request_id = f"emb-{uuid.uuid4().hex[:8]}"
    r = httpx.post(f"{frontend.url}/v1/embeddings", timeout=120, headers={"x-request-id": request_id},
                   json={"model": EMBEDDINGS[0], "input": f"trace me {request_id}"})  # no cache can answer it
    assert r.status_code == 200
    spans = assert_triton_joins_the_frontends_trace(collector, request_id, f"triton.infer {EMBEDDINGS[0]}",
                                                    EMBEDDINGS[0], also=(EMBEDDINGS[1], EMBEDDINGS[2]))
    assert {EMBEDDINGS[1], EMBEDDINGS[2]} <= {s.attributes.get("triton.model_name") for s in spans}


def test_a_request_the_frontend_does_not_sample_is_not_traced_by_triton(frontend, collector):
    unsampled, control = f"no-{uuid.uuid4().hex[:8]}", f"yes-{uuid.uuid4().hex[:8]}"
    body = {"model": EMBEDDINGS[0], "input": "do not trace me"}
    trace_id = uuid.uuid4().hex
    not_sampled = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-00"
    r = httpx.post(f"{frontend.url}/v1/embeddings", json=body, timeout=120,
                   headers={"x-request-id": unsampled, "traceparent": not_sampled})
    assert r.status_code == 200
    r = httpx.post(f"{frontend.url}/v1/embeddings", json=body, timeout=120, headers={"x-request-id": control})
    assert r.status_code == 200
    wait_for(lambda: collector.triton_spans(control))  # after the unsampled request's, had there been any
    time.sleep(0.5)
    assert collector.triton_spans(unsampled) == [] and collector.of_trace(trace_id) == []
