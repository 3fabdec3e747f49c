"""One real tritonserver and one frontend per test session, on free ports, driven by the openai SDK."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from openai import OpenAI

from frontend.app import create_app
from frontend.settings import Settings
from launcher.repository import model_names
from launcher.triton import TritonServer, free_port


@dataclass
class Frontend:
    url: str
    settings: Settings

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


@contextmanager
def run_frontend(settings: Settings) -> Iterator[Frontend]:
    """The app under uvicorn in a thread of this process (so coverage sees it), on a free port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("frontend did not start")
        time.sleep(0.05)
    try:
        yield Frontend(f"http://127.0.0.1:{port}", settings)
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def triton(repository) -> Iterator[TritonServer]:
    with TritonServer(repository, model_names(repository)) as server:
        yield server


@pytest.fixture(scope="session")
def frontend(triton) -> Iterator[Frontend]:
    with run_frontend(Settings(triton_grpc_url=triton.grpc_url, model_index_ttl_s=1.0)) as running:
        yield running


@pytest.fixture(scope="session")
def openai_client(frontend) -> OpenAI:
    return OpenAI(base_url=frontend.base_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def http(frontend) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=frontend.url, timeout=120) as client:
        yield client
