"""Streams whose clients leave: the frontend cancels their Triton streams and the chat engine drops their
sequences at once, read from the engine's own gauge (triton_models.llm.metrics.SEQUENCES) on a
tritonserver of this module's own."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from frontend.settings import Settings
from launcher.triton import TritonServer
from tests.integration import llm_tiny
from tests.stack import run_frontend
from triton_models.llm.metrics import SEQUENCES

pytestmark = pytest.mark.integration

MODEL = llm_tiny.NAME
STREAMS = 16  # the tiny model's max_num_seqs: every stream is in the batch at once
LONG = 8000  # tokens: a stream nobody cancels runs for many seconds
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": LONG,
        "ignore_eos": True, "stream": True}


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream-faults")
    llm_tiny.model_repository(root, context_length=LONG + 64, max_kv_tokens=STREAMS * (LONG + 64),
                              max_num_seqs=STREAMS)
    with TritonServer(root, [MODEL], run_dir=root / ".run") as server:
        yield server


@pytest.fixture(scope="module")
def frontend(triton):
    with run_frontend(Settings(triton_grpc_url=triton.grpc_url, cache_enabled=False)) as running:
        yield running


def sequences(triton: TritonServer) -> dict[str, float]:
    """The engine's sequences by state, from Triton's metrics endpoint."""
    text = httpx.get(triton.metrics_url, timeout=5).text
    counts = {}
    for family in text_string_to_metric_families(text):
        if family.name == SEQUENCES.name:
            counts.update({s.labels["state"]: s.value for s in family.samples if s.labels["model"] == MODEL})
    assert counts, f"{SEQUENCES.name} is not exported by {MODEL}"
    return counts


async def wait_for(check, timeout_s: float) -> float:
    """Seconds until `check()` held; fails after `timeout_s`."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, f"still {check.__doc__} after {timeout_s}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_sixteen_streams_whose_clients_leave_stop_within_two_seconds(triton, frontend):
    def all_running():
        """not every stream running"""
        return sequences(triton).get("running") == STREAMS

    def idle():
        """sequences running or waiting"""
        counts = sequences(triton)
        return counts.get("running") == 0 and counts.get("waiting") == 0

    limits = httpx.Limits(max_connections=STREAMS)
    async with httpx.AsyncClient(base_url=frontend.url, timeout=60, limits=limits) as client:
        async with AsyncExitStack() as streams:
            async def start():
                request = client.stream("POST", "/v1/chat/completions", json=CHAT)
                r = await streams.enter_async_context(request)
                assert r.status_code == 200
                # Kept open, unread: an abandoned line iterator would be finalised and close the response.
                lines = r.aiter_lines()
                streams.push_async_callback(lines.aclose)
                assert (await anext(lines)).startswith("data: ")

            await asyncio.gather(*(start() for _ in range(STREAMS)))
            await wait_for(all_running, 10)
        # Every response closed with its body unread: each connection is dropped, as a client that leaves.
        assert await wait_for(idle, 2.0) < 2.0
