"""compose.yaml: valid against the Compose specification, and wired the way docs/deploy.md says."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from launcher.triton import restricted_flags
from tests.deploy.conftest import BIN, ROOT, container_flags

COMPOSE = ROOT / "compose.yaml"


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def check_compose_spec(path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True, text=True,
    )


def test_matches_compose_spec():
    result = check_compose_spec(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_spec_check_rejects_a_broken_file(tmp_path):
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  triton:\n    image: x\n    ports: 8000\n")
    assert check_compose_spec(broken).returncode != 0


def test_triton_reserves_a_gpu_and_reads_the_volume(services):
    triton = services["triton"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "models:/models:ro" in triton["volumes"]
    assert triton["shm_size"]
    assert triton["depends_on"]["export"]["condition"] == "service_completed_successfully"


def test_export_writes_the_same_volume(services):
    assert "models:/models" in services["export"]["volumes"]
    assert services["export"]["build"]["dockerfile"] == "docker/export.Dockerfile"


def test_frontend_settings_point_at_triton_and_redis(services):
    env = services["frontend"]["environment"]
    assert env["MODELGATE_TRITON_GRPC_URL"] == "triton:8001"
    assert env["MODELGATE_REDIS_URL"].startswith("redis://redis:")
    assert all(key.startswith("MODELGATE_") for key in env)
    assert services["frontend"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "healthcheck" in services["redis"]


def test_triton_command_is_the_image_cmd_restricted_plus_the_gpu_variant(services):
    secret = services["frontend"]["environment"]["MODELGATE_TRITON_API_SECRET"]
    assert services["triton"]["command"] == ["tritonserver", *container_flags(), *restricted_flags(secret),
                                             "--model-config-name=gpu"]


def test_triton_and_the_frontend_share_a_required_secret(services):
    """`${VAR:?message}`: compose refuses to start without it, and both services get the same value."""
    secret = services["frontend"]["environment"]["MODELGATE_TRITON_API_SECRET"]
    assert re.fullmatch(r"\$\{MODELGATE_TRITON_API_SECRET:\?[^}]+\}", secret)
    assert all(flag.endswith(f"={secret}") for flag in services["triton"]["command"] if "restricted" in flag)


def test_only_the_frontend_is_published(services):
    assert "ports" not in services["triton"] and services["triton"]["expose"]
    assert "ports" not in services["redis"]
    # The frontend is published on the host's loopback unless MODELGATE_BIND says otherwise.
    assert services["frontend"]["ports"] == ["${MODELGATE_BIND:-127.0.0.1}:${MODELGATE_PORT:-8000}:8000"]
    env = services["frontend"]["environment"]
    assert env["MODELGATE_HOST"] == "0.0.0.0"  # the setting defaults to loopback; the published port needs it
