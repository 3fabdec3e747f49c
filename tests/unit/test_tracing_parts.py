"""frontend/tracing.py's parts: the trace context TritonBackend sends as gRPC metadata (to an in-process gRPC
server speaking Triton's protocol), the Triton call spans of TracedBackend, the exporters and resource the
OTEL_* variables choose, OTEL_SDK_DISABLED."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from tritonclient.grpc import service_pb2, service_pb2_grpc

from frontend import tracing
from frontend.app import create_app
from frontend.errors import ModelNotReady
from frontend.settings import Settings
from frontend.tracing import Tracing, TracedBackend
from frontend.triton import TRITON_GRPC_API_METADATA, TritonBackend
from launcher.__main__ import build_parser
from launcher.triton import TritonServer, free_port, trace_flags

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class FakeTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Triton's gRPC inference service, in process: answers y=[1.0] and keeps each call's metadata."""

    def __init__(self):
        self.metadata: list[tuple[str, dict[str, str]]] = []

    @staticmethod
    def _response(request) -> service_pb2.ModelInferResponse:
        response = service_pb2.ModelInferResponse(model_name=request.model_name, id=request.id)
        response.outputs.add(name="y", datatype="FP32", shape=[1])
        response.raw_output_contents.append(np.array([1.0], dtype=np.float32).tobytes())
        return response

    async def ModelInfer(self, request, context):
        self.metadata.append(("ModelInfer", dict(context.invocation_metadata())))
        return self._response(request)

    async def ModelStreamInfer(self, request_iterator, context):
        self.metadata.append(("ModelStreamInfer", dict(context.invocation_metadata())))
        async for request in request_iterator:
            for _ in range(2):
                yield service_pb2.ModelStreamInferResponse(infer_response=self._response(request))


@pytest.fixture
async def fake_triton():
    servicer, port = FakeTriton(), free_port()
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


INPUTS = {"x": np.zeros((1, 1), dtype=np.float32)}


@pytest.mark.parametrize("context", [{"traceparent": TRACEPARENT}, {}], ids=["sampled", "none"])
async def test_triton_backend_sends_the_trace_context_as_grpc_metadata_of_every_inference_call(fake_triton,
                                                                                              context):
    servicer, url = fake_triton
    backend = TritonBackend(url, 10, api_secret="s3cret", trace_metadata=lambda: dict(context))
    try:
        assert (await backend.infer("m", INPUTS, ["y"], request_id="r1"))["y"].tolist() == [1.0]
        assert len([r async for r in backend.stream("m", INPUTS, ["y"], request_id="r2")]) == 2
    finally:
        await backend.close()
    assert [method for method, _ in servicer.metadata] == ["ModelInfer", "ModelStreamInfer"]
    for _, metadata in servicer.metadata:
        assert metadata[TRITON_GRPC_API_METADATA] == "s3cret"  # the secret still goes with it
        assert metadata.get("traceparent") == context.get("traceparent")


async def test_triton_backend_without_tracing_sends_no_trace_context(fake_triton):
    servicer, url = fake_triton
    backend = TritonBackend(url, 10)
    with _provider().get_tracer("t").start_as_current_span("request"):  # a current span is not enough
        await backend.infer("m", INPUTS, ["y"])
    await backend.close()
    assert "traceparent" not in servicer.metadata[0][1]


def _provider(sampler=None) -> TracerProvider:
    return TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()


def test_triton_metadata_is_the_current_sampled_spans_context_only():
    assert Tracing.triton_metadata() == {}  # no span
    with _provider().get_tracer("t").start_as_current_span("call") as span:
        context = span.get_span_context()
        assert Tracing.triton_metadata() == {
            "traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"}
    with _provider(ALWAYS_OFF).get_tracer("t").start_as_current_span("call") as span:
        assert span.get_span_context().is_valid and Tracing.triton_metadata() == {}


class Inner:
    """A Backend's infer and stream, recording the trace context current when each runs."""

    def __init__(self, fail: Exception | None = None, responses: int = 3):
        self.fail, self.responses = fail, responses
        self.seen: list[dict[str, str]] = []
        self.closed = False

    async def infer(self, model, inputs, outputs, request_id=""):
        self.seen.append(Tracing.triton_metadata())
        if self.fail:
            raise self.fail
        return {"y": np.ones(1)}

    async def stream(self, model, inputs, outputs, request_id=""):
        try:
            for i in range(self.responses):
                self.seen.append(Tracing.triton_metadata())
                if self.fail and i == 1:
                    raise self.fail
                yield {"y": np.full(1, i)}
        finally:
            self.closed = True

    async def server_ready(self):
        return "passed through"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, Tracing(provider)


async def test_a_stream_resumed_by_other_tasks_keeps_its_span_and_parent(spans, caplog):
    exporter, tracer = spans
    inner = Inner()
    backend = tracer.backend(inner)
    with tracer.tracer.start_as_current_span("request") as request:
        responses = backend.stream("m", INPUTS, ["y"], request_id="r")
        async with asyncio.TaskGroup() as group:  # started in one task, as Generation.start_all does
            first = group.create_task(anext(responses))
        rest = await asyncio.create_task(_drain(responses))  # and read on in another
    assert first.result()["y"].tolist() == [0] and len(rest) == 2
    [call] = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert call.name == "triton.stream m" and call.parent.span_id == request.get_span_context().span_id
    assert call.attributes["modelgate.triton.responses"] == 3
    assert call.attributes["modelgate.request_id"] == "r"
    tp = f"00-{call.context.trace_id:032x}-{call.context.span_id:016x}-{call.context.trace_flags:02x}"
    assert inner.seen == [{"traceparent": tp}] * 3  # the call's span was current at every step
    assert "Failed to detach context" not in caplog.text
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left attached


async def _drain(responses):
    return [r async for r in responses]


async def test_a_stream_the_client_leaves_is_closed_and_its_span_says_cancelled(spans):
    exporter, tracer = spans
    inner = Inner(responses=10)
    responses = tracer.backend(inner).stream("m", INPUTS, ["y"])
    async with contextlib.aclosing(responses):
        await anext(responses)
    assert inner.closed
    [call] = exporter.get_finished_spans()
    assert call.attributes["modelgate.cancelled"] is True and call.status.status_code == StatusCode.UNSET


@pytest.mark.parametrize("method", ["infer", "stream"])
async def test_a_failed_call_records_the_errors_code_not_its_message(spans, method):
    exporter, tracer = spans
    backend = tracer.backend(Inner(fail=ModelNotReady("model `m` is loading: secret detail")))
    with pytest.raises(ModelNotReady):
        if method == "infer":
            await backend.infer("m", INPUTS, ["y"])
        else:
            await _drain(backend.stream("m", INPUTS, ["y"]))
    [call] = exporter.get_finished_spans()
    assert call.name == f"triton.{method} m" and call.status.status_code == StatusCode.ERROR
    assert call.attributes["error.type"] == ModelNotReady.code and "secret detail" not in str(call.to_json())


async def test_other_backend_calls_pass_through(spans):
    _, tracer = spans
    backend = tracer.backend(Inner())
    assert isinstance(backend, TracedBackend) and await backend.server_ready() == "passed through"


@pytest.mark.parametrize(("env", "expected"), [
    ({}, [HttpExporter]),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, [GrpcExporter]),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
     [HttpExporter]),
    ({"OTEL_TRACES_EXPORTER": "console,otlp"}, [ConsoleSpanExporter, HttpExporter]),
    ({"OTEL_TRACES_EXPORTER": "none"}, []),
])
def test_exporters_are_the_ones_otel_traces_exporter_and_the_protocol_name(monkeypatch, env, expected):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    exporters = tracing._exporters()
    try:
        assert [type(e) for e in exporters] == expected
    finally:
        for exporter in exporters:
            exporter.shutdown()


@pytest.mark.parametrize("env", [{"OTEL_TRACES_EXPORTER": "zipkin"},
                                 {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}])
def test_an_exporter_the_frontend_lacks_fails_at_start(monkeypatch, env):
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="the frontend exports"):
        tracing._exporters()


def test_service_name_defaults_to_the_frontends_unless_otel_names_one(monkeypatch):
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert tracing._resource().attributes["service.name"] == "modelgate-frontend"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes,deployment.environment=prod")
    assert tracing._resource().attributes["service.name"] == "from-attributes"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-eu")
    assert tracing._resource().attributes["service.name"] == "gateway-eu"


def test_otel_sdk_disabled_turns_tracing_off_even_when_asked_for(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    with caplog.at_level(logging.INFO, "frontend.app"):
        app = create_app(Settings(_env_file=None, tracing=True), backend=Inner())
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
    assert "OTEL_SDK_DISABLED" in caplog.text
    monkeypatch.setenv("OTEL_SDK_DISABLED", "false")
    exporter = InMemorySpanExporter()
    app = create_app(Settings(_env_file=None, tracing=True), backend=Inner(), span_exporter=exporter)
    assert getattr(app, "_is_instrumented_by_opentelemetry", False)


def test_tracing_is_off_by_default():
    assert Settings(_env_file=None).tracing is False


def test_the_launchers_triton_traces_only_when_given_a_url(tmp_path):
    assert not any(f.startswith("--trace-config") for f in TritonServer(tmp_path, ["a"]).command(tmp_path))
    url = "http://127.0.0.1:4318/v1/traces"
    command = TritonServer(tmp_path, ["a"], trace_url=url).command(tmp_path)
    assert set(trace_flags(url)) <= set(command)
    assert {"--trace-config=mode=opentelemetry", "--trace-config=rate=0", "--trace-config=level=TIMESTAMPS",
            f"--trace-config=opentelemetry,url={url}",
            "--trace-config=opentelemetry,resource=service.name=modelgate-triton"} <= set(command)
    assert build_parser().parse_args(["serve", "--triton-trace-url", url]).triton_trace_url == url
    assert build_parser().parse_args(["serve"]).triton_trace_url == ""
