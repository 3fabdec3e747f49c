"""Dockerfiles: hadolint-clean, and each image carries what the deployment relies on."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.deploy.conftest import BIN, ROOT

DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))


def hadolint(path) -> list[dict]:
    result = subprocess.run([BIN / "hadolint", "--format", "json", str(path)], capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout or "[]")


def instructions(path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_every_image_has_a_dockerfile():
    assert {p.name for p in DOCKERFILES} >= {"triton.Dockerfile", "frontend.Dockerfile", "export.Dockerfile"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(path):
    assert hadolint(path) == []


def test_hadolint_reports_problems(tmp_path):
    """The linter really runs: an unpinned base and a root user are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install curl\nUSER root\n")
    assert {"DL3006", "DL3008", "DL3002"} <= {finding["code"] for finding in hadolint(bad)}


def test_triton_image_is_nvidia_release_without_cpu_stand_in():
    steps = instructions(ROOT / "docker" / "triton.Dockerfile")
    args = dict(a.split("=", 1) for i, a in steps if i == "ARG" and "=" in a)
    assert re.fullmatch(r"\d\d\.\d\d", args["TRITON_VERSION"])
    assert [a for i, a in steps if i == "FROM"] == ["nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3"]
    copies = " ".join(a for i, a in steps if i in ("COPY", "ADD"))
    assert "backends" not in copies and "triton_models/" in copies
    assert ("USER", "1000") in steps
    cmd = next(a for i, a in steps if i == "CMD")
    for flag in ("--model-repository=/models", "--model-control-mode=explicit", "--load-model=*"):
        assert flag in cmd


def test_frontend_image_is_multistage_nonroot_with_healthcheck():
    steps = instructions(ROOT / "docker" / "frontend.Dockerfile")
    assert len([a for i, a in steps if i == "FROM"]) == 2
    assert any(i == "COPY" and a.startswith("--from=build") for i, a in steps)
    user = [a for i, a in steps if i == "USER"][-1]
    assert user not in ("root", "0")
    assert any(i == "HEALTHCHECK" and "healthcheck.py" in a for i, a in steps)
    assert ("CMD", '["python", "-m", "frontend"]') in steps


def test_export_image_matches_triton_release_and_writes_the_volume():
    export = instructions(ROOT / "docker" / "export.Dockerfile")
    triton = instructions(ROOT / "docker" / "triton.Dockerfile")
    version = [a for i, a in export if i == "ARG" and a.startswith("TRITON_VERSION=")]
    assert version == [a for i, a in triton if i == "ARG" and a.startswith("TRITON_VERSION=")]
    assert [a for i, a in export if i == "FROM"] == ["nvcr.io/nvidia/tensorrt:${TRITON_VERSION}-py3"]
    assert any(i == "ENV" and "MODEL_REPOSITORY=/models" in a.split() for i, a in export)


def test_dockerignore_keeps_local_state_out_of_the_context():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "model_repository"} <= ignored
    for _, args in instructions(ROOT / "docker" / "triton.Dockerfile"):
        assert "model_repository" not in args


def test_triton_requirements_come_from_the_triton_extra():
    result = subprocess.run(
        [sys.executable, ROOT / "docker" / "triton_requirements.py", ROOT / "pyproject.toml"],
        capture_output=True, text=True, check=True,
    )
    requirements = result.stdout.split()
    names = {re.split(r"[<>=!~\[]", r)[0] for r in requirements}
    # pillow: LLaVA image preprocessing; onnx: the stand-in backend reads the graph for its token-id inputs;
    # llguidance: the chat engine's structured outputs
    assert names == {"numpy", "onnxruntime", "tokenizers", "pillow", "onnx", "llguidance"}
    assert any(r.startswith("numpy") and "<2" in r for r in requirements)
