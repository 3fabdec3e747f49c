"""Real services for the tests that need them: the frontend under uvicorn, redis-server (installed by the
set-up itself when missing). Fixtures over them live in tests/conftest.py, shared by every test level."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import uvicorn

from frontend.app import create_app
from frontend.settings import Settings
from launcher.triton import free_port


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


def redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary:
        return binary
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("redis-server is missing and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=True, env=env, capture_output=True,
                   timeout=600)
    return shutil.which("redis-server") or "/usr/bin/redis-server"


@contextmanager
def run_redis(folder: Path) -> Iterator[str]:
    """A redis-server of the test session's own on a free loopback port; yields its URL."""
    port = free_port()
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.1)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
