"""Supervision, against a real tritonserver of this module's own (these tests kill it): the launcher's
Supervisor restarts a Triton that died and the frontend recovers without a restart of its own; unloading a
model under load loses no request in flight; `python -m launcher serve` stops in order on SIGTERM and leaves
no process or folder behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from export_scripts.__main__ import main as export_main
from frontend.settings import Settings
from launcher.processes import group_members
from launcher.supervise import Backoff, Supervisor
from launcher.triton import PROJECT_ROOT, TritonServer, free_port
from tests.conftest import REPOSITORY
from tests.integration import llm_tiny
from tests.stack import run_frontend

pytestmark = pytest.mark.integration

MODEL = llm_tiny.NAME
# The embedding models too: their stubs sit idle when Triton is killed, and an idle stub outlives its server.
EMBEDDINGS = "all-minilm-l6-v2"
PARTS = [EMBEDDINGS, f"{EMBEDDINGS}_tokenizer", f"{EMBEDDINGS}_encoder"]
# Long enough that a stream is still running when the test acts on it (the tiny model runs ~1 ms a token).
LONG = 3000
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": LONG,
        "ignore_eos": True, "temperature": 0}
NO_STORE = {"Cache-Control": "no-store"}


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    assert export_main(["embeddings", f"--repository={REPOSITORY}"]) == 0
    root = tmp_path_factory.mktemp("supervised")
    llm_tiny.model_repository(root, context_length=2 * LONG, max_kv_tokens=16 * 2 * LONG)
    for name in PARTS:
        (root / name).symlink_to(REPOSITORY / name, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def supervised(repository):
    server = TritonServer(repository, [MODEL, *PARTS], run_dir=repository / ".run", stop_timeout_s=10)
    with Supervisor(server, backoff=Backoff(first_s=0.2)) as supervisor:
        yield supervisor
    assert not list((repository / ".run").glob("backends-*"))  # each start's folder went with its stop


@pytest.fixture(scope="module")
def frontend(supervised):
    settings = Settings(triton_grpc_url=supervised.server.grpc_url, required_models=[MODEL, EMBEDDINGS],
                        model_index_ttl_s=1.0, cache_enabled=False)
    with run_frontend(settings) as running:
        yield running


@pytest.fixture
def http(frontend):
    with httpx.Client(base_url=frontend.url, timeout=60, headers=NO_STORE) as client:
        yield client


def events(lines) -> list:
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


def wait_until(check, timeout_s: float, interval_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(interval_s)
    raise AssertionError(f"not true after {timeout_s}s: {check.__doc__ or check}")


def test_killed_triton_mid_stream_is_an_error_event_then_503_then_recovery(supervised, http):
    old = supervised.server.pid
    assert len(group_members(old)) >= 4  # tritonserver, the chat model's stub and the embeddings' stubs
    with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))  # the stream is running
        os.kill(old, signal.SIGKILL)
        killed = time.monotonic()
        rest = events(lines)
        ended_after = time.monotonic() - killed
    assert rest[-1] == "[DONE]" and ended_after < 1.0
    error = json.loads(rest[-2])["error"]
    assert error["code"] and set(error) == {"message", "type", "param", "code"}
    ready = http.get("/health/ready")
    assert ready.status_code == 503 and "error" in ready.json()
    # The dead server's model processes went with it, not left holding their memory (idle ones would stay).
    wait_until(lambda: not group_members(old), 3)

    def recovered():
        """chat and embeddings requests succeed again, through the same frontend"""
        reply = http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4})
        vectors = http.post("/v1/embeddings", json={"model": EMBEDDINGS, "input": "hello"})
        return (reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 4
                and vectors.status_code == 200 and len(vectors.json()["data"][0]["embedding"]) == 384)

    wait_until(lambda: supervised.restarts >= 1, 120, 0.2)
    restarted = time.monotonic()
    wait_until(recovered, 10, 0.2)
    assert time.monotonic() - restarted < 5, "the frontend took long to reconnect to the restarted Triton"
    assert http.get("/health/ready").status_code == 200
    assert supervised.server.pid != old


def test_unload_under_load_finishes_every_request_in_flight(frontend, http):
    n, tokens = 8, 600
    body = {**CHAT, "max_tokens": tokens, "stream": True}
    started = []

    def stream(i: int) -> list:
        with httpx.stream("POST", f"{frontend.url}/v1/chat/completions", json=body, timeout=120,
                          headers=NO_STORE) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            started.append(i)
            return events([first, *lines])

    with ThreadPoolExecutor(n) as pool:
        running = [pool.submit(stream, i) for i in range(n)]
        wait_until(lambda: len(started) == n, 30)
        unloaded = http.post("/admin/models/unload", json={"model": MODEL})
        assert unloaded.status_code == 200, unloaded.text
        after = http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4})
        results = [f.result() for f in running]
    try:
        for result in results:  # each ran to its end: no error event, every token counted
            assert result[-1] == "[DONE]" and not any('"error"' in e for e in result)
            finish = [c["choices"][0]["finish_reason"] for c in map(json.loads, result[:-1]) if c["choices"]]
            assert finish[-1] == "length"
        assert after.status_code in (404, 503)
        assert set(after.json()["error"]) == {"message", "type", "param", "code"}
    finally:
        assert http.post("/admin/models/load", json={"model": MODEL}).status_code == 200


def test_sigterm_stops_the_launcher_triton_and_every_model_process(repository):
    port, grpc, triton_http, metrics = (free_port() for _ in range(4))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "launcher", "serve", f"--repository={repository}", f"--models={MODEL}",
         f"--port={port}", f"--triton-grpc-port={grpc}", f"--triton-http-port={triton_http}",
         f"--triton-metrics-port={metrics}", "--shutdown-timeout-s=10"],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def ready():
            """the launcher's frontend answers /health/ready 200"""
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                assert launcher.poll() is None, launcher.stderr.read()
                return False

        wait_until(ready, 120, 0.25)
        children = psutil.Process(launcher.pid).children(recursive=True)
        triton = next(p for p in children if p.name() == "tritonserver")
        assert len(group_members(triton.pid)) >= 2  # tritonserver and the chat model's stub
        assert list(PROJECT_ROOT.glob(f".run/backends-{launcher.pid}-*"))
        launcher.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert launcher.wait(40) == 0, launcher.stderr.read()
        assert time.monotonic() - started < 25
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert not group_members(triton.pid)
    assert not [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not list(PROJECT_ROOT.glob(f".run/backends-{launcher.pid}-*"))
