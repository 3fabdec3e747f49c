"""The environment the chart and compose.yaml give the frontend is what frontend.settings reads."""

from __future__ import annotations

import re

import pytest
import uvicorn.config
import yaml

from frontend.settings import Settings
from tests.deploy.conftest import ROOT, render

PREFIX = "MODELGATE_"
# Named by the deployment issue for features still to land in frontend.settings (extra="ignore" until then).
ANNOUNCED = {"REDIS_URL", "API_KEYS_FILE", "METRICS_PUBLIC"}


def chart_env(values=None) -> dict[str, str]:
    return render(values)["frontend-configmap.yaml"][0]["data"]


def compose_env() -> dict[str, str]:
    """The frontend's environment in compose.yaml, `${VAR:-default}` resolved to its default."""
    env = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["frontend"]["environment"]
    return {key: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value)) for key, value in env.items()}


@pytest.mark.parametrize("source", ["chart", "chart-gpu", "compose"])
def test_every_variable_is_a_setting(source):
    env = {"chart": chart_env, "chart-gpu": lambda: chart_env(yaml.safe_load(
        (ROOT / "helm/modelgate/values-gpu.yaml").read_text())), "compose": compose_env}[source]()
    fields = {name.upper() for name in Settings.model_fields}
    unknown = {key for key in env if key.removeprefix(PREFIX) not in fields | ANNOUNCED}
    assert unknown == set()
    assert all(key.startswith(PREFIX) for key in env)


@pytest.mark.parametrize("source", ["chart", "compose"])
def test_settings_parse_and_reach_uvicorn(source, monkeypatch):
    env = chart_env() if source == "chart" else compose_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)
    assert settings.log_level in uvicorn.config.LOG_LEVELS  # passed to uvicorn.run verbatim
    assert settings.port == 8000
    if source == "chart":
        assert settings.triton_grpc_url.startswith("dns:///") and settings.triton_lb_policy == "round_robin"


def test_required_models_from_the_chart(monkeypatch):
    env = chart_env({"frontend": {"settings": {"REQUIRED_MODELS": "embeddings,chat"}}})
    monkeypatch.setenv("MODELGATE_REQUIRED_MODELS", env["MODELGATE_REQUIRED_MODELS"])
    assert Settings(_env_file=None).required_models == ["embeddings", "chat"]
