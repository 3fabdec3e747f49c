"""Fixtures shared by every test level: the exported model repository, the session's real tritonserver,
frontend and redis-server (started once, on free loopback ports, only when a test asks for them)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from export_scripts.__main__ import main as export_main
from frontend.settings import Settings
from launcher.repository import model_names
from launcher.triton import TritonServer
from tests.stack import Frontend, run_frontend, run_redis

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = ROOT / "model_repository"
# The session's Triton is sealed as `make serve` seals it: its control protocols need this header value.
TRITON_API_SECRET = secrets.token_urlsafe(24)


def pytest_sessionstart(session):
    """Under coverage, have every Triton this session starts measure our code in its Python stubs."""
    import coverage

    from launcher.triton import COVERAGE_RCFILE_ENV

    if coverage.Coverage.current() is not None:
        os.environ[COVERAGE_RCFILE_ENV] = str(ROOT / "pyproject.toml")


@pytest.fixture(scope="session")
def repository() -> Path:
    """model_repository/ with every default model exported (a no-op when `make export` already ran)."""
    assert export_main(["all", f"--repository={REPOSITORY}"]) == 0, "export failed"
    return REPOSITORY


@pytest.fixture(scope="session")
def triton(repository) -> Iterator[TritonServer]:
    """One real tritonserver per test session, every exported model loaded, on free loopback ports."""
    with TritonServer(repository, model_names(repository), api_secret=TRITON_API_SECRET) as server:
        yield server


@pytest.fixture(scope="session")
def frontend(triton) -> Iterator[Frontend]:
    with run_frontend(Settings(triton_grpc_url=triton.grpc_url, model_index_ttl_s=1.0,
                               triton_api_secret=TRITON_API_SECRET)) as running:
        yield running


@pytest.fixture(scope="session")
def openai_client(frontend) -> OpenAI:
    return OpenAI(base_url=frontend.base_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def http(frontend) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=frontend.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A real redis-server for the session (installed by the set-up when missing)."""
    with run_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url
