"""Shared helpers for the deployment checks: the repository root, tool paths, and the chart rendered by a
real Helm engine (helm-python-sdk binds Helm's Go SDK, so this is `helm template`, offline)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "modelgate"
BIN = Path(sys.executable).parent  # hadolint, check-jsonschema: console scripts of the `test` extra
RELEASE, NAMESPACE = "mg", "ai"


def render(values: dict | None = None, *, revision: int = 1) -> dict[str, list[dict]]:
    """Template path -> the objects it renders (NOTES.txt excluded)."""
    import helm_python

    chart = helm_python.Chart.load(CHART)
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, revision=revision, is_install=True)
    return {
        Path(path).name: [doc for doc in yaml.safe_load_all(text) if doc]
        for path, text in manifests.items()
        if not path.endswith("NOTES.txt")
    }


def objects(rendered: dict[str, list[dict]]) -> dict[tuple[str, str], dict]:
    """(kind, name) -> object."""
    return {(o["kind"], o["metadata"]["name"]): o for docs in rendered.values() for o in docs}


def gpu_values() -> dict:
    return yaml.safe_load((CHART / "values-gpu.yaml").read_text())


@pytest.fixture(scope="session")
def default_render():
    return render()


@pytest.fixture(scope="session")
def gpu_render():
    return render(gpu_values())


def container_flags() -> list[str]:
    """tritonserver flags of the Triton image's CMD (the ones the chart and compose.yaml repeat)."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "docker" / "triton.Dockerfile").read_text())
    cmd = yaml.safe_load(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    assert cmd[0] == "tritonserver"
    return cmd[1:]
