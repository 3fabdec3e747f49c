"""The state frontend.residency shares between replicas: in this process, or in Redis with MODELGATE_REDIS_URL.

- a lock per Triton, so that one replica at a time loads or evicts (with a heartbeat: a replica that dies
  holding it frees it within LOCK_TTL_S);
- leases of the requests in flight per model (ratelimit.Leases, each with its own expiry), so that no replica
  evicts a model another is using;
- loads started per API key per minute (the thrash guard);
- models an operator unloaded (`parked`: not loaded again on demand until an operator loads them);
- what each model measured at its last load (footprint, load time), the estimate for its next load.

Redis unreachable: each replica falls back to its own view, with an ERROR log (availability over
coordination, as frontend/ratelimit.py does); Triton's own state still decides what is loaded.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from frontend.ratelimit import Leases

log = logging.getLogger(__name__)

PREFIX = "modelgate:residency:"
LOCK_TTL_S = 15.0  # refreshed every third of it while held
LEASE_POLL_S = 0.1

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_EXTEND = ("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end "
           "return 0")


@dataclass(frozen=True)
class Measured:
    """What a model took at its last load: bytes (None: not measurable here) and seconds."""

    host_bytes: int | None = None
    gpu_bytes: int | None = None
    server_host_bytes: int = 0  # tritonserver's own growth during the load (native backends)
    server_gpu_bytes: int = 0
    load_s: float | None = None


class ModelLeases(Leases):
    """Requests in flight per model (not per API key, as the rate limits' leases are)."""

    @staticmethod
    def _set(name: str) -> str:
        return f"{PREFIX}inflight:{name}"


class ResidencyStore:
    def __init__(self, redis_url: str, scope: str, lease_ttl_s: float):
        self._redis = aioredis.Redis.from_url(redis_url) if redis_url else None
        self.shared = self._redis is not None
        self._scope = scope  # which Triton: the lock and the measurements are per Triton
        self.leases = ModelLeases(redis_url, lease_ttl_s)
        self._local_lock = asyncio.Lock()
        self._loads: dict[str, tuple[int, int]] = {}  # tenant -> (minute, loads started in it)
        self._parked: set[str] = set()
        self._measured: dict[str, Measured] = {}

    def _key(self, kind: str) -> str:
        return f"{PREFIX}{kind}:{self._scope}"

    @asynccontextmanager
    async def locked(self, wait_s: float):
        """The Triton's lock, waiting up to `wait_s` (0: only if free); yields whether it was taken."""
        if self._redis is None:
            async with self.locked_locally(wait_s) as taken:
                yield taken
            return
        token = uuid.uuid4().hex
        try:
            taken = await self._acquire(token, wait_s)
        except RedisError as exc:
            log.error("residency lock in Redis unavailable, using this replica's own: %s", exc)
            async with self.locked_locally(wait_s) as taken:
                yield taken
            return
        heartbeat = asyncio.ensure_future(self._heartbeat(token)) if taken else None
        try:
            yield taken
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                try:
                    await self._redis.eval(_RELEASE, 1, self._key("lock"), token)
                except RedisError as exc:  # it expires on its own
                    log.error("releasing the residency lock failed: %s", exc)

    @asynccontextmanager
    async def locked_locally(self, wait_s: float):
        taken = await _acquire_local(self._local_lock, wait_s)
        try:
            yield taken
        finally:
            if taken:
                self._local_lock.release()

    async def _acquire(self, token: str, wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        while True:
            if await self._redis.set(self._key("lock"), token, nx=True, px=int(LOCK_TTL_S * 1000)):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(LEASE_POLL_S)

    async def _heartbeat(self, token: str) -> None:
        while True:
            await asyncio.sleep(LOCK_TTL_S / 3)
            try:
                await self._redis.eval(_EXTEND, 1, self._key("lock"), token, int(LOCK_TTL_S * 1000))
            except RedisError as exc:
                log.error("extending the residency lock failed: %s", exc)

    async def count_load(self, tenant: str, limit: int) -> float | None:
        """Count a load started by `tenant`; None when within `limit` per minute, else seconds until the
        minute ends (the caller refuses the load)."""
        minute, now = int(time.time() // 60), time.time()
        retry_s = 60 - now % 60
        if self._redis is not None:
            key = f"{self._key('loads')}:{tenant}:{minute}"
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    count, _ = await pipe.incr(key).expire(key, 120).execute()
                return None if count <= limit else retry_s
            except RedisError as exc:
                log.error("load counts in Redis unavailable, counting in this replica: %s", exc)
        window, count = self._loads.get(tenant, (minute, 0))
        count = count + 1 if window == minute else 1
        self._loads[tenant] = (minute, count)
        return None if count <= limit else retry_s

    async def park(self, name: str, parked: bool) -> None:
        (self._parked.add if parked else self._parked.discard)(name)
        if self._redis is not None:
            try:
                await (self._redis.sadd if parked else self._redis.srem)(self._key("parked"), name)
            except RedisError as exc:
                log.error("parked models in Redis unavailable: %s", exc)

    async def parked(self, name: str) -> bool:
        if self._redis is not None:
            try:
                return bool(await self._redis.sismember(self._key("parked"), name))
            except RedisError as exc:
                log.error("parked models in Redis unavailable: %s", exc)
        return name in self._parked

    async def in_flight(self, name: str) -> int:
        try:
            return await self.leases.held(name)
        except RedisError as exc:
            log.error("model leases in Redis unavailable: %s", exc)
            return 0

    async def record(self, name: str, measured: Measured) -> None:
        self._measured[name] = measured
        if self._redis is not None:
            try:
                await self._redis.hset(self._key("measured"), name, orjson.dumps(asdict(measured)))
            except RedisError as exc:
                log.error("model measurements in Redis unavailable: %s", exc)

    async def measured(self) -> dict[str, Measured]:
        if self._redis is not None:
            try:
                raw = await self._redis.hgetall(self._key("measured"))
                self._measured.update({k.decode(): Measured(**orjson.loads(v)) for k, v in raw.items()})
            except RedisError as exc:
                log.error("model measurements in Redis unavailable: %s", exc)
        return dict(self._measured)

    async def close(self) -> None:
        await self.leases.close()
        if self._redis is not None:
            await self._redis.aclose()


async def _acquire_local(lock: asyncio.Lock, wait_s: float) -> bool:
    if wait_s <= 0:
        if lock.locked():
            return False
        await lock.acquire()
        return True
    try:
        await asyncio.wait_for(lock.acquire(), wait_s)
        return True
    except asyncio.TimeoutError:
        return False
