"""Per-key requests/min, tokens/min and concurrent requests; in memory, or in Redis shared by every replica.

Requests and tokens are windows of the `limits` library. Tokens are charged from the exact usage the
services record (frontend/usage.py), before each body message leaves, so the client's next request — on any
replica sharing the Redis — sees them; a request may take a key past its budget, and the next one then waits.
Concurrency is a set of leases, one per request, each with its own expiry (a replica that dies mid-request
frees its slots when their leases expire, without touching anyone else's).
Storage down (Redis unreachable): requests are admitted unlimited with an ERROR log, rather than every
request failing.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis
from limits import RateLimitItemPerMinute
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string
from redis.exceptions import RedisError

from frontend.auth import ApiKey
from frontend.errors import InvalidRequest, RateLimited

log = logging.getLogger(__name__)

NAMESPACE = "modelgate"
REQUESTS, TOKENS, CONCURRENT = "requests", "tokens", "concurrent"


def duration(seconds: float) -> str:
    """OpenAI's reset format: "20ms", "1.5s", "6m0s"."""
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{round(seconds, 1):g}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"


@dataclass
class Budget:
    limit: int
    remaining: int
    reset_s: float

    def headers(self, kind: str) -> list[tuple[bytes, bytes]]:
        return [(f"x-ratelimit-limit-{kind}".encode(), str(self.limit).encode()),
                (f"x-ratelimit-remaining-{kind}".encode(), str(max(self.remaining, 0)).encode()),
                (f"x-ratelimit-reset-{kind}".encode(), duration(self.reset_s).encode())]


def _refuse(kind: str, message: str, retry_after_s: float, headers: list[tuple[bytes, bytes]]) -> RateLimited:
    error = RateLimited(message)
    error.kind = kind
    error.headers = {"retry-after": str(max(1, math.ceil(retry_after_s))),
                     **{k.decode(): v.decode() for k, v in headers}}
    return error


# Atomic in Redis: drop expired leases, refuse at the limit, else add this one. Redis' clock, not the
# replicas', decides expiry, so replicas with skewed clocks agree.
_TAKE_LEASE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""


class Leases:
    """Concurrency leases per key: `take` one (False at the limit), `give_back` exactly that one."""

    def __init__(self, redis_url: str, ttl_s: float):
        self.ttl_ms = int(ttl_s * 1000)
        self._redis = aioredis.Redis.from_url(redis_url) if redis_url else None
        self._script = self._redis.register_script(_TAKE_LEASE) if self._redis is not None else None
        self._memory: dict[str, dict[str, float]] = {}  # key name -> lease id -> expiry (monotonic)

    @staticmethod
    def _set(name: str) -> str:
        return f"{NAMESPACE}/leases/{name}"

    async def take(self, name: str, limit: int) -> str | None:
        lease = uuid.uuid4().hex
        if self._script is not None:
            taken = await self._script(keys=[self._set(name)], args=[limit, self.ttl_ms, lease])
            return lease if taken else None
        now = time.monotonic()
        held = {k: t for k, t in self._memory.get(name, {}).items() if t > now}
        if len(held) >= limit:
            self._memory[name] = held
            return None
        held[lease] = now + self.ttl_ms / 1000
        self._memory[name] = held
        return lease

    async def give_back(self, name: str, lease: str) -> None:
        if self._redis is not None:
            await self._redis.zrem(self._set(name), lease)
        else:
            self._memory.get(name, {}).pop(lease, None)

    async def held(self, name: str) -> int:
        if self._redis is not None:
            return int(await self._redis.zcount(self._set(name), f"({int(time.time() * 1000)}", "+inf"))
        now = time.monotonic()
        return sum(1 for t in self._memory.get(name, {}).values() if t > now)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


class RateLimiter:
    """Admission (`admit`, which returns a release callback), token charging and the x-ratelimit-* headers."""

    def __init__(self, redis_url: str = "", lease_ttl_s: float = 600.0):
        if redis_url:
            self.storage = storage_from_string(f"async+{redis_url}", implementation="redispy", wrap_exceptions=True)
        else:
            self.storage = storage_from_string("async+memory://", wrap_exceptions=True)
        # Requests: a moving window (exact; one entry per request). Tokens: a fixed window (one counter, however
        # many tokens are charged; the budget returns whole at the window's end).
        self.windows = {REQUESTS: MovingWindowRateLimiter(self.storage), TOKENS: FixedWindowRateLimiter(self.storage)}
        self.leases = Leases(redis_url, lease_ttl_s)
        self.shared = bool(redis_url)

    @staticmethod
    def _ids(key: ApiKey, kind: str) -> tuple[str, str, str]:
        return NAMESPACE, kind, key.name

    async def _budget(self, key: ApiKey, kind: str, limit: int) -> Budget:
        stats = await self.windows[kind].get_window_stats(RateLimitItemPerMinute(limit), *self._ids(key, kind))
        return Budget(limit, stats.remaining, stats.reset_time - time.time())

    async def budgets(self, key: ApiKey) -> dict[str, Budget]:
        limits, result = key.limits, {}
        if limits.requests_per_minute:
            result[REQUESTS] = await self._budget(key, REQUESTS, limits.requests_per_minute)
        if limits.tokens_per_minute:
            result[TOKENS] = await self._budget(key, TOKENS, limits.tokens_per_minute)
        return result

    async def headers(self, key: ApiKey) -> list[tuple[bytes, bytes]]:
        return [h for kind, budget in (await self.budgets(key)).items() for h in budget.headers(kind)]

    async def admit(self, key: ApiKey, cost: int = 1) -> tuple[list[tuple[bytes, bytes]], object]:
        """Count `cost` requests against `key` (a completion with a list of prompts is one per prompt) and take
        one concurrency lease; RateLimited when over a limit.

        Returns the x-ratelimit-* headers as of admission and an async `release()` to call once the response
        has ended (it gives back this request's lease, and only it).
        """
        try:
            return await self._admit(key, cost)
        except (StorageError, RedisError) as exc:
            log.error("rate limit storage failed, admitting %s unlimited: %s", key.name,
                      getattr(exc, "storage_error", exc))
            return [], _nothing

    async def _admit(self, key: ApiKey, cost: int):
        limits = key.limits
        lease = None
        if limits.max_concurrent:
            lease = await self.leases.take(key.name, limits.max_concurrent)
            if lease is None:
                raise _refuse(CONCURRENT, f"Rate limit reached for `{key.name}`: at most {limits.max_concurrent} "
                              "concurrent requests", 1, [])

        async def release() -> None:
            if lease is not None:
                try:
                    await self.leases.give_back(key.name, lease)
                except RedisError as exc:  # its expiry frees the slot
                    log.error("rate limit storage failed releasing a lease of %s: %s", key.name, exc)

        try:
            budgets = await self.budgets(key)
            tokens = budgets.get(TOKENS)
            if tokens is not None and tokens.remaining <= 0:
                raise _refuse(TOKENS, f"Rate limit reached for `{key.name}` on tokens per minute: limit "
                              f"{tokens.limit}", tokens.reset_s, tokens.headers(TOKENS))
            requests = budgets.get(REQUESTS)
            if requests is not None and cost > requests.limit:  # could never be admitted: no use waiting
                raise InvalidRequest(f"this request counts as {cost} requests (one per prompt), over the "
                                     f"{requests.limit} per minute `{key.name}` may send; send fewer prompts",
                                     param="prompt")
            if requests is not None:
                item = RateLimitItemPerMinute(limits.requests_per_minute)
                if not await self.windows[REQUESTS].hit(item, *self._ids(key, REQUESTS), cost=cost):
                    raise _refuse(REQUESTS, f"Rate limit reached for `{key.name}` on requests per minute: limit "
                                  f"{requests.limit}" + (f" ({cost} prompts in this request)" if cost > 1 else ""),
                                  requests.reset_s, requests.headers(REQUESTS))
                requests.remaining -= cost
        except BaseException:
            await release()
            raise
        return [h for kind, budget in budgets.items() for h in budget.headers(kind)], release

    async def charge_tokens(self, key: ApiKey, tokens: int) -> None:
        """Add `tokens` to the key's window: the usage happened, so it is never refused (the count may pass the
        limit; the next request then waits for the window to end)."""
        limit = key.limits.tokens_per_minute
        if not limit or tokens <= 0:
            return
        try:
            await self.windows[TOKENS].hit(RateLimitItemPerMinute(limit), *self._ids(key, TOKENS), cost=tokens)
        except StorageError as exc:
            log.error("rate limit storage failed charging %d tokens to %s: %s", tokens, key.name, exc.storage_error)

    async def check(self) -> bool:
        return await self.storage.check()

    async def close(self) -> None:
        await self.leases.close()


async def _nothing() -> None:
    return None
