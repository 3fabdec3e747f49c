"""Stored responses of the Responses API (`store: true`): what `GET /v1/responses/{id}` returns and what a
request's `previous_response_id` continues from.

Kept where the rate limits are: in this process (an LRU with a time to live, bounded in bytes), or in Redis when
`MODELGATE_REDIS_URL` is set, so every replica sees every stored response. Entries are keyed by tenant: a key
never reads, continues or deletes another key's responses (it gets a 404, as for an id that never existed).
A record is JSON: the response object, the conversation before this request (`history`) and its own input
items (`input`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
import redis.asyncio as aioredis
from cachetools import TTLCache
from redis.exceptions import RedisError

from frontend.errors import ServiceUnavailable

PREFIX = "modelgate:responses:"


class ResponseStore:
    def __init__(self, redis_url: str = "", ttl_s: float = 86400.0, max_bytes: int = 64 * 1024 * 1024,
                 timer: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self._redis = aioredis.Redis.from_url(redis_url) if redis_url else None
        self._local: TTLCache = TTLCache(maxsize=max_bytes, ttl=ttl_s, timer=timer, getsizeof=len)

    @staticmethod
    def _key(tenant: str, response_id: str) -> str:
        return f"{PREFIX}{tenant}:{response_id}"

    async def put(self, tenant: str, response_id: str, record: dict) -> None:
        data = orjson.dumps(record)
        if self._redis is None:
            if len(data) <= self._local.maxsize:
                self._local[self._key(tenant, response_id)] = data
            return
        await self._call(self._redis.set(self._key(tenant, response_id), data, px=int(self.ttl_s * 1000)))

    async def get(self, tenant: str, response_id: str) -> dict | None:
        if self._redis is None:
            data = self._local.get(self._key(tenant, response_id))
        else:
            data = await self._call(self._redis.get(self._key(tenant, response_id)))
        return orjson.loads(data) if data is not None else None

    async def delete(self, tenant: str, response_id: str) -> bool:
        if self._redis is None:
            return self._local.pop(self._key(tenant, response_id), None) is not None
        return bool(await self._call(self._redis.delete(self._key(tenant, response_id))))

    @staticmethod
    async def _call(command):
        try:
            return await command
        except RedisError as exc:  # the store is shared state: without it, answer 503, never a wrong 404
            raise ServiceUnavailable("the response store (Redis) is unavailable; retry shortly") from exc

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
