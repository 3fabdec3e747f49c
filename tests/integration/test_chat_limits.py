"""Cancellation and overload through the frontend, on a tiny LLM that runs one sequence with one waiting."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from openai import OpenAI

from frontend.settings import Settings
from launcher.triton import TritonServer
from tests.integration import llm_tiny
from tests.stack import run_frontend

pytestmark = pytest.mark.integration

MODEL = "tiny-llm-one-slot"
ENDLESS = 60000


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat-limits")
    llm_tiny.model_repository(root, MODEL, context_length=2 * ENDLESS, max_kv_tokens=2 * ENDLESS, max_num_seqs=1,
                              max_queue=1)
    with TritonServer(root, [MODEL]) as triton, \
            run_frontend(Settings(triton_grpc_url=triton.grpc_url, model_index_ttl_s=1.0,
                                  cache_enabled=False)) as frontend:
        yield OpenAI(base_url=frontend.base_url, api_key="unused", max_retries=0, timeout=60)


def endless(client: OpenAI):
    return client.completions.create(model=MODEL, prompt="Go on", max_tokens=ENDLESS, stream=True,
                                     extra_body={"ignore_eos": True})


def test_closing_a_stream_frees_the_slot(client):
    stream = endless(client)
    for received, _ in enumerate(stream):
        if received == 3:
            break
    stream.close()
    # One slot: this is served only if the closed stream's sequence left the engine.
    started = time.monotonic()
    result = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                            temperature=0)
    assert result.usage.completion_tokens == 4 and time.monotonic() - started < 30


def test_full_engine_is_503_not_a_hang(client):
    running = endless(client)
    next(iter(running))  # admitted: holds the only slot
    with ThreadPoolExecutor(1) as pool:
        # Queued: holds the only waiting place. Its response starts with its first token, so it waits aside.
        waiting = pool.submit(endless, client)
        time.sleep(1.0)
        try:
            with pytest.raises(openai.InternalServerError) as caught:
                client.completions.create(model=MODEL, prompt="One more", max_tokens=2)
            assert caught.value.status_code == 503 and caught.value.code == "overloaded"
        finally:
            running.close()
        second = waiting.result(timeout=60)  # served once the slot frees
        assert next(iter(second)).choices
        second.close()
