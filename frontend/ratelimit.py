"""Per-key requests/min, tokens/min and concurrent requests, counted in the `limits` library's storage.

In memory by default (one frontend process); `MODELGATE_REDIS_URL` shares the counts between replicas.
Tokens are charged after the fact from `usage` (or per streamed event), so a request may take
a key past its budget; the next one then waits. Concurrency is a counter with an expiry as a safety net,
so the slots of a replica that died free themselves after `slot_ttl_s`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from frontend.auth import ApiKey
from frontend.errors import RateLimited

log = logging.getLogger(__name__)

NAMESPACE = "modelgate"


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


def _refuse(message: str, retry_after_s: float, headers: list[tuple[bytes, bytes]]) -> RateLimited:
    error = RateLimited(message)
    error.headers = {"retry-after": str(max(1, math.ceil(retry_after_s))),
                     **{k.decode(): v.decode() for k, v in headers}}
    return error


class RateLimiter:
    """Admission (`admit`/`release`), token charging and the x-ratelimit-* headers for one key."""

    def __init__(self, redis_url: str = "", slot_ttl_s: float = 600.0):
        if redis_url:
            self.storage = storage_from_string(f"async+{redis_url}", implementation="redispy", wrap_exceptions=True)
        else:
            self.storage = storage_from_string("async+memory://", wrap_exceptions=True)
        # Requests: a moving window (exact; one entry per request). Tokens: a fixed window (one counter, however
        # many tokens are charged; the budget returns whole at the window's end).
        self.windows = {"requests": MovingWindowRateLimiter(self.storage), "tokens": FixedWindowRateLimiter(self.storage)}
        self.slot_ttl_s = math.ceil(slot_ttl_s)
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
            result["requests"] = await self._budget(key, "requests", limits.requests_per_minute)
        if limits.tokens_per_minute:
            result["tokens"] = await self._budget(key, "tokens", limits.tokens_per_minute)
        return result

    async def headers(self, key: ApiKey) -> list[tuple[bytes, bytes]]:
        return [h for kind, budget in (await self.budgets(key)).items() for h in budget.headers(kind)]

    async def admit(self, key: ApiKey) -> list[tuple[bytes, bytes]]:
        """Count one request against `key` (and take a concurrency slot); RateLimited when over a limit.

        Returns the x-ratelimit-* headers as of admission. Call `release` once the response has ended.
        Storage down (redis unreachable): the request is let through unlimited, with an ERROR log, rather than
        every request failing.
        """
        try:
            return await self._admit(key)
        except StorageError as exc:
            log.error("rate limit storage failed, admitting %s unlimited: %s", key.name, exc.storage_error)
            return []

    async def _admit(self, key: ApiKey) -> list[tuple[bytes, bytes]]:
        limits = key.limits
        if limits.max_concurrent:
            taken = await self.storage.incr(self._slot(key), self.slot_ttl_s, 1)
            if taken > limits.max_concurrent:
                await self._give_back(key)
                raise _refuse(f"Rate limit reached for `{key.name}`: at most {limits.max_concurrent} concurrent "
                              "requests", 1, [])
        try:
            budgets = await self.budgets(key)
            tokens = budgets.get("tokens")
            if tokens is not None and tokens.remaining <= 0:
                raise _refuse(f"Rate limit reached for `{key.name}` on tokens per minute: limit {tokens.limit}",
                              tokens.reset_s, tokens.headers("tokens"))
            requests = budgets.get("requests")
            if requests is not None:
                item = RateLimitItemPerMinute(limits.requests_per_minute)
                if not await self.windows["requests"].hit(item, *self._ids(key, "requests")):
                    raise _refuse(f"Rate limit reached for `{key.name}` on requests per minute: limit "
                                  f"{requests.limit}", requests.reset_s, requests.headers("requests"))
                requests.remaining -= 1
        except BaseException:
            await self.release(key)
            raise
        return [h for kind, budget in budgets.items() for h in budget.headers(kind)]

    def _slot(self, key: ApiKey) -> str:
        return f"{NAMESPACE}/concurrent/{key.name}"

    async def _give_back(self, key: ApiKey) -> None:
        if await self.storage.incr(self._slot(key), self.slot_ttl_s, -1) < 0:
            await self.storage.clear(self._slot(key))  # the safety expiry reset it under us

    async def release(self, key: ApiKey) -> None:
        if key.limits.max_concurrent:
            try:
                await self._give_back(key)
            except StorageError as exc:  # its safety expiry frees the slot
                log.error("rate limit storage failed releasing a slot of %s: %s", key.name, exc.storage_error)

    async def charge_tokens(self, key: ApiKey, tokens: int) -> None:
        """Take `tokens` from the key's budget, down to zero (the usage happened; it cannot be refused)."""
        try:
            await self._charge(key, tokens)
        except StorageError as exc:
            log.error("rate limit storage failed charging %d tokens to %s: %s", tokens, key.name, exc.storage_error)

    async def _charge(self, key: ApiKey, tokens: int) -> None:
        limit = key.limits.tokens_per_minute
        if not limit or tokens <= 0:
            return
        item = RateLimitItemPerMinute(limit)
        window = self.windows["tokens"]
        remaining = (await window.get_window_stats(item, *self._ids(key, "tokens"))).remaining
        cost = min(tokens, remaining)
        if cost > 0:
            await window.hit(item, *self._ids(key, "tokens"), cost=cost)

    async def check(self) -> bool:
        return await self.storage.check()
