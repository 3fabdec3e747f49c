"""Limits that mean what they say, across replicas: two frontends sharing a real redis-server, the real
tritonserver (SmolLM2 chat), the openai SDK. Streams are charged their prompt; concurrency is leased per
request; an expired lease frees its own slot and nobody else's."""

from __future__ import annotations

import asyncio
import json
import uuid
from contextlib import ExitStack

import openai
import pytest

from frontend.auth import ApiKey, Limits, hash_key
from frontend.errors import RateLimited
from frontend.ratelimit import RateLimiter
from frontend.settings import Settings
from tests.stack import run_frontend

pytestmark = pytest.mark.integration

CHAT = "smollm2-135m-instruct"
LONG = "the quick brown fox jumps over the lazy dog " * 30  # ~300 prompt tokens once templated


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]  # the session's Redis is shared: names of this module's own
    names = {"meter": f"meter-{suffix}", "count": f"count-{suffix}"}
    entries = [{"name": names["meter"], "key_sha256": hash_key("sk-meter"), "limits": {"tokens_per_minute": 1000}},
               {"name": names["count"], "key_sha256": hash_key("sk-count")}]
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    path.write_text(json.dumps(entries))
    return {"file": str(path), **names}


@pytest.fixture(scope="module")
def replicas(triton, redis_url, keys):
    settings = Settings(triton_grpc_url=triton.grpc_url, redis_url=redis_url, api_keys_file=keys["file"],
                        cache_enabled=False, triton_api_secret=triton.api_secret or "")
    with ExitStack() as stack:
        yield [stack.enter_context(run_frontend(settings)) for _ in range(2)]


def sdk(frontend, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=frontend.base_url, api_key=key, max_retries=0, timeout=120)


def test_a_stream_without_include_usage_is_charged_its_prompt_on_every_replica(replicas):
    a, b = sdk(replicas[0], "sk-meter"), sdk(replicas[1], "sk-meter")
    # What the engine counts for this prompt (another key, so the metered budget is untouched).
    usage = sdk(replicas[0], "sk-count").chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": LONG}], max_tokens=1, temperature=0).usage
    assert 250 < usage.prompt_tokens < 400 and usage.completion_tokens == 1
    with a.chat.completions.with_streaming_response.create(
            model=CHAT, messages=[{"role": "user", "content": LONG}], max_tokens=1, temperature=0,
            stream=True) as response:
        before = int(response.headers["x-ratelimit-remaining-tokens"])
        chunks = [line for line in response.iter_lines() if line.startswith("data: {")]
    assert before == 1000 and chunks and all('"usage":{' not in c for c in chunks)  # no usage was asked for
    raw = b.embeddings.with_raw_response.create(model="all-minilm-l6-v2", input="x")  # the other replica
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) == 1000 - usage.total_tokens
    # Streams alternate between the replicas until the budget is spent; then either one refuses.
    streams = 1
    while streams * usage.total_tokens < 1000:
        with (a, b)[streams % 2].chat.completions.create(model=CHAT, messages=[{"role": "user", "content": LONG}],
                                                         max_tokens=1, temperature=0, stream=True) as stream:
            assert list(stream)
        streams += 1
    assert streams == -(-1000 // usage.total_tokens)  # each one was charged all its tokens, no more, no less
    for replica in (a, b):
        with pytest.raises(openai.RateLimitError, match="tokens per minute"):
            replica.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=1)


async def test_concurrency_leases_in_redis_expire_one_by_one(redis_url):
    key = ApiKey(f"lease-{uuid.uuid4().hex[:8]}", "0" * 64, frozenset({"inference"}), Limits(max_concurrent=1))
    short, other = RateLimiter(redis_url, lease_ttl_s=0.3), RateLimiter(redis_url, lease_ttl_s=60)
    try:
        _, release_stale = await short.admit(key)  # a replica that dies mid-request: never released in time
        with pytest.raises(RateLimited, match="concurrent"):
            await other.admit(key)
        await asyncio.sleep(0.5)
        _, release_live = await other.admit(key)  # the stale lease expired on its own
        await release_stale()  # late: gives back only its own lease
        with pytest.raises(RateLimited, match="concurrent"):
            await short.admit(key)
        assert await other.leases.held(key.name) == 1
        await release_live()
        assert await other.leases.held(key.name) == 0
    finally:
        await short.close()
        await other.close()
