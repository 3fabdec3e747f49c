"""Tracing in the chart (values `tracing`): off, nothing of it renders; on, Triton gets the launcher's own
--trace-config flags (tests/integration/test_tracing.py runs a real tritonserver with them) and the frontend
an environment its tracing reads as meant. Rendered by a real Helm engine, validated against Kubernetes'
schemas and linted."""

from __future__ import annotations

import os

import helm_python
import kubernetes_validate
import pytest

from frontend import tracing
from frontend.settings import Settings
from launcher.triton import trace_flags
from tests.deploy.conftest import CHART, render
from tests.deploy.test_helm_render import KUBE_VERSIONS

ENDPOINT = "http://otel-collector.observability:4318"
ON = {"tracing": {"enabled": True, "otlpEndpoint": ENDPOINT,
                  "frontend": {"samplerArg": "0.25",
                               "env": [{"name": "OTEL_EXPORTER_OTLP_HEADERS",
                                        "valueFrom": {"secretKeyRef": {"name": "otel", "key": "headers"}}}]},
                  "triton": {"rate": 100}}}


def container(rendered, template: str) -> dict:
    return rendered[template][0]["spec"]["template"]["spec"]["containers"][0]


def env_values(spec: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in spec.get("env", [])}


def test_off_by_default_nothing_of_tracing_renders(default_render):
    args = container(default_render, "triton-deployment.yaml")["args"]
    assert args and not any(a.startswith("--trace-config") for a in args)
    frontend = env_values(container(default_render, "frontend-deployment.yaml"))
    assert not any(name.startswith("OTEL_") or name == "MODELGATE_TRACING" for name in frontend)


def test_on_triton_gets_the_launchers_trace_flags():
    args = container(render(ON), "triton-deployment.yaml")["args"]
    assert [a for a in args if a.startswith("--trace-config")] == trace_flags(f"{ENDPOINT}/v1/traces", 100)


def test_on_the_frontend_environment_turns_tracing_on_as_configured(monkeypatch):
    spec = container(render(ON), "frontend-deployment.yaml")
    env = env_values(spec)
    assert env["OTEL_EXPORTER_OTLP_HEADERS"] is None  # the given EnvVar, from its Secret, passed through
    for name in [n for n in os.environ if n.startswith("OTEL_")]:  # the chart's alone
        monkeypatch.delenv(name)
    for name, value in env.items():
        if value is not None:
            monkeypatch.setenv(name, value)
    assert Settings(_env_file=None).tracing is True
    [exporter] = tracing._exporters()
    try:
        assert exporter._endpoint == f"{ENDPOINT}/v1/traces"  # the HTTP exporter, as Triton's
    finally:
        exporter.shutdown()
    app_tracing = tracing.Tracing.from_environment(exporter=None)
    try:
        assert app_tracing.provider.resource.attributes["service.name"] == "modelgate-frontend"
        sampler = app_tracing.provider.sampler.get_description()
        assert sampler.startswith("ParentBased{root:TraceIdRatioBased{0.25}")
    finally:
        app_tracing.shutdown()


def test_without_an_endpoint_both_send_to_a_collector_on_localhost():
    rendered = render({"tracing": {"enabled": True}})
    args = container(rendered, "triton-deployment.yaml")["args"]
    assert "--trace-config=opentelemetry,url=http://localhost:4318/v1/traces" in args
    assert env_values(container(rendered, "frontend-deployment.yaml"))["OTEL_EXPORTER_OTLP_ENDPOINT"] == \
        "http://localhost:4318"


def test_the_tracing_variant_validates_and_lints():
    rendered = render(ON)
    for template in ("triton-deployment.yaml", "frontend-deployment.yaml"):
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(rendered[template][0], version, strict=True)
    report = helm_python.lint(CHART, ON, strict=True)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", [
    {"rate": -1}, {"level": "TENSORS"}, {"serviceName": "triton,evil=1"},
], ids=["negative-rate", "tensors-level", "comma-in-service-name"])
def test_values_schema_rejects_bad_triton_tracing_values(values):
    with pytest.raises(helm_python.HelmError):
        render({"tracing": {"enabled": True, "triton": values}})


@pytest.mark.parametrize("values", [
    {"otlpEndpoint": "otel-collector:4318"}, {"frontend": {"sampler": "sometimes"}},
    {"frontend": {"samplerArg": "2"}}, {"frontend": {"env": [{"name": "MODELGATE_API_KEYS", "value": "x"}]}},
    {"exporter": "zipkin"},
], ids=["endpoint-without-scheme", "sampler", "ratio-above-one", "non-otel-env", "unknown-key"])
def test_values_schema_rejects_bad_tracing_values(values):
    with pytest.raises(helm_python.HelmError):
        render({"tracing": {"enabled": True, **values}})
