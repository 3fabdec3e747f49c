"""Models on demand: load a repository model when a request needs it, unload idle ones, keep Triton within a
memory budget, never evict a model in use.

The decision is Triton's state, not a replica's memory: every load or eviction happens under one lock per
Triton (frontend/residency_store.py: Redis when configured, shared by every replica), and re-reads Triton's
repository index under it, so a model another replica loaded is READY (not loaded twice), one it is loading
is LOADING (waited for), one an idle sweep unloaded is UNAVAILABLE. In this replica, concurrent requests for
one model share one load (`ensure`). A request waits up to MODELGATE_LOAD_WAIT_S, then gets 503 with
Retry-After while the load goes on.

Eviction (idle TTL, count or byte budget) picks the least recently used model that is not pinned and has no
request in flight on any replica (leases taken at admission, `hold`). Last use is the latest of Triton's own
statistics (`last_inference`: every replica's, and direct Triton clients' requests), this replica's requests
and when this replica first saw the model ready. Footprints are measured from Triton's processes
(frontend/footprint.py); an ensemble, a BLS pipeline and their parts load and unload together.

Thrash guard: only served repository models load on demand (the registry knows no other name), a key starts
at most MODELGATE_LOADS_PER_KEY_PER_MINUTE loads, a model in use is never evicted, and a model an operator
unloaded stays unloaded (`park`) until an operator loads it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from redis.exceptions import RedisError
from tritonclient.grpc.aio import InferenceServerClient as TritonClient

from frontend.errors import APIError, ModelNotReady, RateLimited, ServiceUnavailable, Timeout
from frontend.footprint import ProcessMeter, Snapshot, Usage
from frontend.metrics import NO_MODEL, UNKNOWN_MODEL, Metrics
from frontend.registry import READY, UNAVAILABLE, ModelRegistry, ServedModel
from frontend.residency_store import Measured, ResidencyStore
from frontend.triton import Backend

log = logging.getLogger(__name__)

LOADING, UNLOADING = "LOADING", "UNLOADING"
PINNED_PARAM = "pinned"  # config parameter: "true" keeps the model loaded
IDLE_PARAM = "idle_unload_s"  # config parameter: seconds without requests before the model is unloaded; 0: never
POLL_S = 0.1
ROOM_POLL_S = 0.25  # while every resident model is pinned or in use
FAILED_RETRY_S = 30.0  # a load that failed is not tried again sooner (a broken model cannot be hammered)
SWEEP_MIN_S, SWEEP_MAX_S = 0.25, 10.0  # the idle sweep's period: a quarter of the shortest TTL, within these
GONE_WAIT_S = 5.0  # for an evicted model's processes to exit before the budget is measured again

_tenant: ContextVar[str] = ContextVar("modelgate_residency_tenant", default="")


@dataclass(frozen=True)
class Policy:
    """The residency settings (frontend/settings.py), in one place."""

    load_on_demand: bool = False
    load_wait_s: float = 30.0
    operation_wait_s: float = 120.0  # a load or unload reaching its new state (MODELGATE_ADMIN_WAIT_S)
    idle_unload_s: float = 0.0
    pinned_models: frozenset[str] = frozenset()
    max_loaded_models: int = 0
    host_budget_bytes: int = 0
    gpu_budget_bytes: int = 0
    loads_per_key_per_minute: int = 0

    @classmethod
    def from_settings(cls, settings) -> "Policy":
        return cls(settings.load_on_demand, settings.load_wait_s, settings.admin_wait_s, settings.idle_unload_s,
                   frozenset(settings.pinned_models), settings.max_loaded_models,
                   settings.host_memory_budget_bytes, settings.gpu_memory_budget_bytes,
                   settings.loads_per_key_per_minute)

    @property
    def budgets(self) -> bool:
        return bool(self.max_loaded_models or self.host_budget_bytes or self.gpu_budget_bytes)

    def pinned(self, model: ServedModel) -> bool:
        return model.name in self.pinned_models or model.parameters.get(PINNED_PARAM, "").lower() in ("true", "1")

    def idle_ttl(self, model: ServedModel) -> float:
        """Seconds of idleness before `model` is unloaded; 0: never."""
        if self.pinned(model):
            return 0.0
        value = model.parameters.get(IDLE_PARAM, "")
        try:
            return max(float(value), 0.0) if value else self.idle_unload_s
        except ValueError:
            log.warning("%s: parameter %s=%r is not a number; using the default", model.name, IDLE_PARAM, value)
            return self.idle_unload_s


def _retry_after(error: APIError, seconds: float) -> APIError:
    error.headers = {"retry-after": str(max(1, math.ceil(seconds)))}
    return error


def _retrieve(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


class Residency:
    """Which models are loaded in Triton, and when that changes."""

    def __init__(self, policy: Policy, backend: Backend, registry: ModelRegistry, metrics: Metrics,
                 store: ResidencyStore, meter: ProcessMeter | None, on_change: Callable[[str], None]):
        self.policy = policy
        self.backend = backend
        self.registry = registry
        self.metrics = metrics
        self.store = store
        self.meter = meter
        self.on_change = on_change  # e.g. drop the model's cached responses
        self._loads: dict[str, asyncio.Future] = {}  # one load per model in this replica
        self._started: dict[str, float] = {}  # model -> when its load started (monotonic)
        self._failed: dict[str, tuple[float, APIError]] = {}
        self._last_used: dict[str, float] = {}  # wall clock, this replica's requests
        self._sweeper: asyncio.Task | None = None
        self._unmeasured_warned = False
        self._no_room: dict[str, str] = {}  # model -> why its load waits for room

    @classmethod
    def from_settings(cls, settings, backend: Backend, registry: ModelRegistry, metrics: Metrics,
                      on_change: Callable[[str], None]) -> "Residency":
        """The app's: state shared through MODELGATE_REDIS_URL, Triton measured through its gRPC URL's port; the
        registry loads through it."""
        store = ResidencyStore(settings.redis_url, settings.triton_grpc_url, settings.request_timeout_s + 60)
        residency = cls(Policy.from_settings(settings), backend, registry, metrics, store,
                        ProcessMeter(settings.triton_grpc_url), on_change)
        registry.on_demand = residency.ensure
        return residency

    # ---- requests -------------------------------------------------------------------------------------------

    def _tracked(self, name: str) -> bool:
        """Whether requests on `name` need leases: only when something may evict it."""
        if self.policy.budgets or self.policy.idle_unload_s:
            return True
        model = self.registry.cached(name)
        return model is not None and self.policy.idle_ttl(model) > 0

    async def hold(self, ctx) -> None:
        """At admission: the request's model is in use until the request ends (on every replica's view)."""
        _tenant.set(ctx.tenant)
        name = ctx.model
        if name in (NO_MODEL, UNKNOWN_MODEL) or not self._tracked(name):
            return
        self._last_used[name] = time.time()
        try:
            lease = await self.store.leases.take(name, 2**31 - 1)
        except RedisError as exc:  # Redis down: this replica's own view only
            log.error("model lease for %s not taken: %s", name, exc)
            lease = None

        async def release() -> None:
            self._last_used[name] = time.time()
            if lease is not None:
                try:
                    await self.store.leases.give_back(name, lease)
                except RedisError as exc:  # its expiry frees it
                    log.error("model lease for %s not given back: %s", name, exc)

        ctx.on_close(release)

    async def ensure(self, model: ServedModel) -> ServedModel:
        """`model` loaded for a request (the registry's on_demand); 503 + Retry-After when it is not ready
        within MODELGATE_LOAD_WAIT_S (the load goes on), 429 when the key started too many loads."""
        name = model.name
        if not self.policy.load_on_demand:
            raise ModelNotReady(f"The model `{name}` is {model.state.lower()}; try again shortly", param="model")
        if await self.store.parked(name):
            raise ModelNotReady(f"The model `{name}` was unloaded by an operator; it is not loaded on demand until "
                                f"an operator loads it again", param="model")
        failed = self._failed.get(name)
        if failed is not None and time.monotonic() - failed[0] < FAILED_RETRY_S:
            raise _retry_after(type(failed[1])(failed[1].message, param="model", code=failed[1].code),
                               FAILED_RETRY_S - (time.monotonic() - failed[0]))
        task = self._loads.get(name)
        if task is None or task.done():
            await self._count_load(name)
            self._started[name] = time.monotonic()
            task = self._loads[name] = asyncio.ensure_future(self._load(model))
            task.add_done_callback(_retrieve)  # nobody may be waiting any more
        try:
            await asyncio.wait_for(asyncio.shield(task), self.policy.load_wait_s)
        except asyncio.TimeoutError:
            raise await self._still_loading(name) from None
        ready = (await self.registry.refresh()).get(name)
        if ready is None or not ready.ready:  # unloaded again at once: by an operator, or evicted
            raise _retry_after(ModelNotReady(f"The model `{name}` is not loaded; try again shortly",
                                             param="model"), 1)
        return ready

    async def _count_load(self, name: str) -> None:
        limit = self.policy.loads_per_key_per_minute
        if not limit:
            return
        tenant = _tenant.get()
        retry_s = await self.store.count_load(tenant, limit)
        if retry_s is not None:
            self.metrics.rate_limited.labels("loads").inc()
            log.info("refused loading %s for %s: over %d loads per minute", name, tenant or "-", limit)
            error = RateLimited(f"Rate limit reached for `{tenant or 'anonymous'}`: at most {limit} model loads "
                                f"per minute (a request for a model that is not loaded starts one); try `{name}` "
                                f"again later")
            error.kind = "loads"
            raise _retry_after(error, retry_s)

    async def _still_loading(self, name: str) -> APIError:
        if name in self._no_room:
            return self._no_room_error(name, self._no_room[name])
        estimate = (await self.store.measured()).get(name, Measured()).load_s or self.policy.load_wait_s
        left = estimate - (time.monotonic() - self._started.get(name, time.monotonic()))
        return _retry_after(ModelNotReady(f"The model `{name}` is loading; retry shortly", param="model"),
                            max(left, 1))

    async def gone(self, name: str) -> None:
        """Triton answered NOT_FOUND for `name`, which the registry had ready: it was unloaded meanwhile. Returns
        when the call may be retried (loaded again on demand, or by someone else); 503 otherwise, never 404."""
        self.registry.invalidate()
        served = (await self.registry.refresh()).get(name)
        if served is not None and served.ready:
            return
        if served is not None and self.policy.load_on_demand:
            await self.ensure(served)
            return
        raise self.gone_error(name)

    @staticmethod
    def gone_error(name: str) -> APIError:
        return _retry_after(ModelNotReady(f"The model `{name}` was unloaded while this request was on its way; "
                                          f"try again shortly", param="model"), 1)

    # ---- operators ------------------------------------------------------------------------------------------

    async def park(self, name: str, parked: bool) -> None:
        """An operator unloaded (True) or loaded (False) `name`: on-demand loading leaves it alone until loaded."""
        await self.store.park(name, parked)
        self._failed.pop(name, None)

    async def describe(self, models: list[ServedModel]) -> tuple[dict[str, dict], dict]:
        """Per served model: pinned, idle TTL, last use, requests in flight, footprint, last load time; and
        Triton's totals against the budgets."""
        snapshot = await self.meter.snapshot() if self.meter is not None else None
        measured = await self.store.measured()
        uses = await self._uses([m.name for m in models if m.ready])
        details = {}
        for model in models:
            record = measured.get(model.name, Measured())
            if model.ready and snapshot is not None:
                usage = self._usage(model.name, snapshot, record)
                footprint = {"host_bytes": usage.host_bytes, "gpu_bytes": usage.gpu_bytes, "measured": "now"}
            elif record.host_bytes is not None:
                footprint = {"host_bytes": record.host_bytes, "gpu_bytes": record.gpu_bytes,
                             "measured": "at_last_load"}
            else:
                footprint = None
            details[model.name] = {
                "pinned": self.policy.pinned(model), "idle_unload_s": self.policy.idle_ttl(model) or None,
                "last_used": int(uses[model.name][0]) if uses.get(model.name, (0,))[0] else None,
                "in_flight": await self.store.in_flight(model.name), "footprint": footprint,
                "load_seconds": record.load_s}
        total = snapshot.total if snapshot is not None else None
        summary = {"load_on_demand": self.policy.load_on_demand, "loaded_models": sum(m.ready for m in models),
                   "max_loaded_models": self.policy.max_loaded_models or None,
                   "host_bytes": total.host_bytes if total else None,
                   "host_budget_bytes": self.policy.host_budget_bytes or None,
                   "gpu_bytes": total.gpu_bytes if total else None,
                   "gpu_budget_bytes": self.policy.gpu_budget_bytes or None}
        return details, summary

    # ---- loading --------------------------------------------------------------------------------------------

    async def _index(self) -> dict[str, str]:
        """Triton's state per model (READY if any version is)."""
        states: dict[str, str] = {}
        for entry in await self.backend.repository_index():
            name, state = entry["name"], entry.get("state") or UNAVAILABLE
            if states.get(name) != READY:
                states[name] = state
        return states

    async def _settled(self, name: str) -> str:
        """Triton's state of `name` once it is neither loading nor unloading (someone else's operation)."""
        deadline = time.monotonic() + self.policy.operation_wait_s
        while True:
            state = (await self._index()).get(name, UNAVAILABLE)
            if state not in (LOADING, UNLOADING):
                return state
            if time.monotonic() > deadline:
                raise Timeout(f"`{name}` is still {state.lower()} after {self.policy.operation_wait_s:g}s",
                              param="model")
            await asyncio.sleep(POLL_S)

    def _parts(self, name: str) -> list[str]:
        """The models `name` needs, parts before the models using them, `name` last."""
        order: list[str] = []

        def visit(current: str) -> None:
            if current in order:
                return
            spec = self.registry.catalog.get(current)
            for part in spec.parts if spec is not None else ():
                visit(part)
            order.append(current)

        visit(name)
        return order

    def _steps(self, names: list[str]) -> set[str]:
        """Ensemble steps among the parts of `names`: Triton loads those with their ensemble."""
        return {step for n in names if (spec := self.registry.catalog.get(n)) is not None for step in spec.steps}

    async def _load(self, model: ServedModel) -> None:
        name = model.name
        async with self.store.locked(self.policy.operation_wait_s) as taken:
            if not taken:
                raise _retry_after(ServiceUnavailable(
                    f"another replica has been loading or unloading models on this Triton for over "
                    f"{self.policy.operation_wait_s:g}s; `{name}` is not loaded yet", param="model"), 5)
            if await self._settled(name) == READY:  # another replica, or an operator, loaded it
                return
            await self._make_room(model)
            before = await self.meter.snapshot() if self.meter is not None else None
            parts = self._parts(name)
            steps = self._steps(parts)
            started = time.monotonic()
            try:
                states = await self._index()
                for part in parts[:-1]:  # a BLS pipeline's networks: Triton loads only an ensemble's steps
                    if part in states and part not in steps and states[part] != READY:
                        await self.backend.load_model(part)
                await self.backend.load_model(name)
                if await self._settled(name) != READY:
                    raise APIError(f"Triton did not bring `{name}` to READY")
            except APIError as error:
                self.metrics.model_loads.labels(name, "error").inc()
                if isinstance(error, (ServiceUnavailable, Timeout)):  # Triton itself, not the model
                    raise
                log.error("loading %s failed: %s", name, error.message)
                failure = APIError(f"Loading the model `{name}` failed; the server log has the details",
                                   param="model", code="model_load_failed")
                self._failed[name] = (time.monotonic(), failure)
                raise failure from error
            finally:
                self.registry.invalidate()
                self.on_change(name)
            load_s = time.monotonic() - started
            after = await self.meter.snapshot() if self.meter is not None else None
            measured = self._measure(name, before, after, load_s)
            await self.store.record(name, measured)
            self._failed.pop(name, None)
            self.metrics.model_loads.labels(name, "ok").inc()
            self.metrics.model_load_duration.labels(name).observe(load_s)
            for memory, value in (("host", measured.host_bytes), ("gpu", measured.gpu_bytes)):
                if value is not None:
                    self.metrics.model_footprint.labels(name, memory).set(value)
            log.info("loaded %s on demand in %.2fs (host %s bytes, gpu %s bytes)", name, load_s,
                     measured.host_bytes, measured.gpu_bytes)
            if self.policy.budgets:  # the estimate was short (a first load): back within budget, never `name`
                await self._make_room(model, adding=False, wait=False)

    def _usage(self, name: str, snapshot: Snapshot, record: Measured) -> Usage:
        """The model's processes and its parts' now, plus tritonserver's growth at its last load."""
        usage = snapshot.of(self._parts(name))
        gpu = None if usage.gpu_bytes is None else usage.gpu_bytes + record.server_gpu_bytes
        return Usage(usage.host_bytes + record.server_host_bytes, gpu)

    def _measure(self, name: str, before: Snapshot | None, after: Snapshot | None, load_s: float) -> Measured:
        if before is None or after is None:
            return Measured(load_s=load_s)
        server_host = max(after.server.host_bytes - before.server.host_bytes, 0)
        server_gpu = max((after.server.gpu_bytes or 0) - (before.server.gpu_bytes or 0), 0)
        usage = self._usage(name, after, Measured(server_host_bytes=server_host, server_gpu_bytes=server_gpu))
        return Measured(usage.host_bytes, usage.gpu_bytes, server_host, server_gpu, load_s)

    # ---- eviction -------------------------------------------------------------------------------------------

    async def _resident(self) -> list[ServedModel]:
        return [m for m in (await self.registry.refresh()).values() if m.ready]

    async def _estimate(self, name: str) -> Usage:
        """What loading `name` will take: its last measurement, else the largest model measured."""
        measured = await self.store.measured()
        record = measured.get(name)
        if record is not None and record.host_bytes is not None:
            return Usage(record.host_bytes, record.gpu_bytes)
        known = [m for m in measured.values() if m.host_bytes is not None]
        if not known:
            return Usage()
        return Usage(max(m.host_bytes for m in known), max((m.gpu_bytes or 0) for m in known))

    async def _over(self, resident: list[ServedModel], need: Usage | None) -> str | None:
        """Why Triton is over a budget with `need` added (None: as it is), or None when within them."""
        policy = self.policy
        adding = need is not None
        if policy.max_loaded_models and len(resident) + adding > policy.max_loaded_models:
            return f"at most {policy.max_loaded_models} models loaded (MODELGATE_MAX_LOADED_MODELS)"
        if not (policy.host_budget_bytes or policy.gpu_budget_bytes) or self.meter is None:
            return None
        snapshot = await self.meter.snapshot()
        if snapshot is None:
            if not self._unmeasured_warned:
                self._unmeasured_warned = True
                log.warning("a memory budget is set, but Triton's processes are not visible from this frontend "
                            "(another host or container): byte budgets are not enforced; "
                            "MODELGATE_MAX_LOADED_MODELS is")
            return None
        total, need = snapshot.total, need or Usage()
        if policy.host_budget_bytes and total.host_bytes + need.host_bytes > policy.host_budget_bytes:
            return (f"host memory {total.host_bytes} + {need.host_bytes} bytes over the budget "
                    f"{policy.host_budget_bytes} (MODELGATE_HOST_MEMORY_BUDGET_BYTES)")
        if policy.gpu_budget_bytes and total.gpu_bytes is not None and \
                total.gpu_bytes + (need.gpu_bytes or 0) > policy.gpu_budget_bytes:
            return (f"GPU memory {total.gpu_bytes} + {need.gpu_bytes or 0} bytes over the budget "
                    f"{policy.gpu_budget_bytes} (MODELGATE_GPU_MEMORY_BUDGET_BYTES)")
        return None

    async def _make_room(self, model: ServedModel, adding: bool = True, wait: bool = True) -> None:
        """Evict least recently used models until `model` fits (or, not `adding`, until Triton is back within
        its budgets); with `wait`, wait for models in use to finish up to MODELGATE_LOAD_WAIT_S."""
        if not self.policy.budgets:
            return
        need = await self._estimate(model.name) if adding else None
        deadline = time.monotonic() + self.policy.load_wait_s
        while True:
            resident = await self._resident()
            reason = await self._over(resident, need)
            if reason is None:
                return
            victim = await self._victim(resident, exclude=set(self._parts(model.name)))
            if victim is not None:
                log.info("evicting %s to load %s: %s", victim.name, model.name, reason)
                await self._unload(victim, "budget")
                continue
            if not wait:
                log.warning("over budget after loading %s and nothing can be evicted: %s", model.name, reason)
                return
            if time.monotonic() >= deadline:
                raise self._no_room_error(model.name, reason)
            self._no_room[model.name] = reason  # what a request that stops waiting is told
            try:
                await asyncio.sleep(ROOM_POLL_S)
            finally:
                self._no_room.pop(model.name, None)

    @staticmethod
    def _no_room_error(name: str, reason: str) -> APIError:
        return _retry_after(ModelNotReady(f"The model `{name}` cannot be loaded now: {reason}, and every loaded "
                                          f"model is pinned or in use; try again shortly", param="model",
                                          code="insufficient_capacity"), 5)

    async def _victim(self, resident: list[ServedModel], exclude: set[str]) -> ServedModel | None:
        """The least recently used model that is not pinned, not being loaded and not in use anywhere: never
        used first (the one seen loaded longest ago), then by last request."""
        candidates = [m for m in resident if m.name not in exclude and not self.policy.pinned(m)
                      and not (m.name in self._loads and not self._loads[m.name].done())]
        uses = await self._uses([m.name for m in candidates])
        for model in sorted(candidates, key=lambda m: uses[m.name]):
            if not await self.store.in_flight(model.name):
                return model
        return None

    async def _uses(self, names: list[str]) -> dict[str, tuple[float, float]]:
        """(latest request, first seen loaded) per model, wall-clock seconds, 0 for none. Requests are Triton's
        `last_inference` (every replica's and direct clients') and this replica's own (those still running)."""
        triton = await self._triton_last_inference() if names else {}
        return {n: (max(triton.get(n, 0.0), self._last_used.get(n, 0.0)), self.registry.ready_since(n))
                for n in names}

    async def _triton_last_inference(self) -> dict[str, float]:
        """Triton's `last_inference` per model (every client's requests), empty when statistics fail."""
        try:
            stats = await model_statistics(self.backend)
        except APIError as exc:
            log.warning("Triton's model statistics unavailable: %s", exc.message)
            return {}
        last: dict[str, float] = {}
        for entry in stats:
            at = int(entry.get("last_inference") or 0) / 1000
            last[entry["name"]] = max(last.get(entry["name"], 0.0), at)
        return last

    async def _unload(self, model: ServedModel, reason: str) -> None:
        """Unload `model` with its ensemble steps and the parts no other loaded model needs."""
        name = model.name
        others = {p for m in await self._resident() if m.name != name for p in self._parts(m.name)}
        try:
            await self.backend.unload_model(name, unload_dependents=True)
            await self._settled(name)
            states = await self._index()
            for part in reversed(self._parts(name)[:-1]):
                if part not in others and states.get(part) == READY:
                    await self.backend.unload_model(part, unload_dependents=True)
                    await self._settled(part)
        finally:
            self.registry.invalidate()
            self.on_change(name)
        self.metrics.model_evictions.labels(name, reason).inc()
        log.info("unloaded %s (%s)", name, reason)
        await self._processes_gone(self._parts(name))

    async def _processes_gone(self, names: list[str]) -> None:
        """Wait (briefly) for the unloaded models' processes to exit, so the next measurement excludes them."""
        if self.meter is None:
            return
        deadline = time.monotonic() + GONE_WAIT_S
        while time.monotonic() < deadline:
            snapshot = await self.meter.snapshot()
            if snapshot is None or not any(n in snapshot.pids for n in names):
                return
            await asyncio.sleep(POLL_S)

    # ---- idle sweep -----------------------------------------------------------------------------------------

    async def sweep(self) -> list[str]:
        """Unload every model idle past its TTL and in use nowhere; the names unloaded."""
        resident = await self.registry.list()
        candidates = [m for m in resident if m.ready and self.policy.idle_ttl(m) > 0]
        if not candidates or not await self._due(candidates):
            return []
        unloaded = []
        async with self.store.locked(0) as taken:  # another replica is at it: the next sweep looks again
            if not taken:
                return []
            resident = {m.name: m for m in await self._resident()}
            for model in await self._due([resident[m.name] for m in candidates if m.name in resident]):
                loading = self._loads.get(model.name)
                if (loading is not None and not loading.done()) or await self.store.in_flight(model.name):
                    continue
                await self._unload(model, "idle")
                unloaded.append(model.name)
        return unloaded

    async def _due(self, models: list[ServedModel]) -> list[ServedModel]:
        """The models idle past their TTL: since their last request, or since loaded when never used."""
        uses = await self._uses([m.name for m in models])
        now = time.time()
        return [m for m in models if now - max(uses[m.name]) >= self.policy.idle_ttl(m)]

    def _sweep_period(self) -> float:
        ttls = [t for m in self.registry.cached_models() if m.ready and (t := self.policy.idle_ttl(m)) > 0]
        return min(max(min(ttls) / 4, SWEEP_MIN_S), SWEEP_MAX_S) if ttls else SWEEP_MAX_S

    async def _sweep_forever(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(SWEEP_MIN_S)  # the period follows the TTLs of the models loaded now
            if time.monotonic() - last < self._sweep_period():
                continue
            last = time.monotonic()
            try:
                await self.sweep()
            except APIError as exc:  # Triton restarting: the next sweep tries again
                log.warning("idle sweep: %s", exc.message)
            except Exception:
                log.exception("idle sweep failed")

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
            self._sweeper = None
        for task in self._loads.values():
            task.cancel()
        await self.store.close()
        await self.registry.catalog.close()


async def model_statistics(backend: Backend) -> list[dict]:
    """Triton's model statistics (`model_stats`), through the backend's `model_statistics()` when it has one.
    TritonBackend has none yet (frontend/triton.py belongs to the tracing work): its client is used directly,
    with its secret, as its own calls are."""
    call = getattr(backend, "model_statistics", None)
    if call is not None:
        return await call()
    client = getattr(backend, "_client", None)  # TritonBackend's, also through wrappers that pass calls on
    if not isinstance(client, TritonClient):
        return []
    stats = await backend._call(client.get_inference_statistics(
        headers=backend._headers, as_json=True, client_timeout=10))
    return stats.get("model_stats", [])
