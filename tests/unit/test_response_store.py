"""frontend/response_store.py: per-tenant records with a time to live, in memory or in a real redis-server
shared by replicas; an unreachable Redis is a 503, never a silent miss."""

from __future__ import annotations

import pytest

from frontend.errors import ServiceUnavailable
from frontend.response_store import ResponseStore
from launcher.triton import free_port

RECORD = {"response": {"id": "resp_1", "output": []}, "history": [], "input": [{"id": "msg_1"}]}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_memory_records_are_per_tenant_and_expire():
    clock = Clock()
    store = ResponseStore(ttl_s=10, timer=clock)
    await store.put("a", "resp_1", RECORD)
    assert await store.get("a", "resp_1") == RECORD and await store.get("b", "resp_1") is None
    assert not await store.delete("b", "resp_1")
    clock.now = 11
    assert await store.get("a", "resp_1") is None


async def test_memory_is_bounded_in_bytes():
    store = ResponseStore(max_bytes=300)
    for i in range(5):
        await store.put("a", f"resp_{i}", RECORD)
    kept = [i for i in range(5) if await store.get("a", f"resp_{i}") is not None]
    assert kept and kept[-1] == 4 and len(kept) < 5  # the least recently used went first
    await store.put("a", "huge", {"x": "y" * 1000})  # larger than the whole store: not kept
    assert await store.get("a", "huge") is None


async def test_replicas_sharing_redis_share_records_with_its_ttl(redis_url):
    import redis.asyncio as aioredis

    one, two = ResponseStore(redis_url, ttl_s=60), ResponseStore(redis_url, ttl_s=60)
    try:
        await one.put("a", "resp_shared", RECORD)
        assert await two.get("a", "resp_shared") == RECORD and await two.get("b", "resp_shared") is None
        client = aioredis.Redis.from_url(redis_url)
        assert 0 < await client.pttl("modelgate:responses:a:resp_shared") <= 60_000
        await client.aclose()
        assert await two.delete("a", "resp_shared") and await one.get("a", "resp_shared") is None
    finally:
        await one.close()
        await two.close()


async def test_an_unreachable_redis_is_a_503():
    store = ResponseStore(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(ServiceUnavailable):
        await store.get("a", "resp_1")
    await store.close()
