"""Which OpenAI models exist: Triton's repository index plus each model's config `parameters`.

No second, hand-kept list: a model is served when its config says `openai_task`; it answers when it is
loaded. A repository model that is not loaded stays visible (not ready) when its config is known: seen
loaded by this or another replica, or read from the repository folder (frontend/catalog.py); with
MODELGATE_LOAD_ON_DEMAND a request for it loads it (`on_demand`, frontend/residency.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from frontend.catalog import ModelCatalog, ModelSpec
from frontend.errors import InvalidRequest, ModelNotFound, ModelNotReady
from frontend.triton import Backend
from triton_models.contract import SALTED_KINDS

log = logging.getLogger(__name__)

READY = "READY"
UNAVAILABLE = "UNAVAILABLE"
CONFIG_TTL_S = 30.0  # how long a model's config is trusted without reading it again


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str
    state: str
    task: str
    parameters: dict[str, str]
    created: int
    kind: str = ""  # triton_models.contract.model_kind of its config
    digest: str = ""  # of its config parameters: a reload with another config, same version, changes it

    @property
    def ready(self) -> bool:
        return self.state == READY

    @property
    def takes_cache_salt(self) -> bool:
        return self.kind in SALTED_KINDS

    def int_param(self, key: str, default: int | None = None) -> int | None:
        value = self.parameters.get(key)
        return int(value) if value not in (None, "") else default


class ModelRegistry:
    """Caches the index for `ttl_s`; a name it does not know triggers one refresh before a 404.

    Configs are cached per (name, version) while the model stays READY: a model seen loading, unloading or
    missing, a failed index call (Triton down: the one that comes back may serve new files) and
    `invalidate()` all drop them. Concurrent refreshes share the one in flight.
    """

    def __init__(self, backend: Backend, ttl_s: float = 5.0, catalog: ModelCatalog | None = None):
        self.backend = backend
        self.ttl_s = ttl_s
        self.catalog = catalog or ModelCatalog()
        # Loads a served model that is not ready for a request (frontend.residency), when on-demand loading is on.
        self.on_demand: Callable[[ServedModel], Awaitable[ServedModel]] | None = None
        self._models: dict[str, ServedModel] = {}
        # (name, version) -> (read at, spec). Re-read after CONFIG_TTL_S: another replica, or an operator
        # talking to Triton directly, may have reloaded the model with another config under the same version.
        self._configs: dict[tuple[str, str], tuple[float, ModelSpec]] = {}
        self._created: dict[str, int] = {}
        self._ready_since: dict[str, float] = {}  # wall clock: when this replica first saw it READY this time
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()  # one index read at a time, so results land in order
        self._inflight: asyncio.Future | None = None
        self._generation = 0  # bumped by invalidate(): a refresh started before it is not reused after
        self._inflight_generation = 0

    def invalidate(self) -> None:
        """Forget the index and every config: a model reloaded with an override keeps its version number,
        so a config cached by (name, version) could outlive the change."""
        self._fetched_at = float("-inf")
        self._configs.clear()
        self._generation += 1

    async def refresh(self) -> dict[str, ServedModel]:
        """The index read now; callers arriving while a read is in flight wait for that one instead."""
        task = self._inflight
        if task is None or task.done() or self._inflight_generation != self._generation:
            task = self._inflight = asyncio.ensure_future(self._refresh())
            self._inflight_generation = self._generation
            task.add_done_callback(_retrieve)  # no "exception never retrieved" when every waiter left
        # shield: a caller that gives up (client gone) does not cancel the read the others wait for
        return await asyncio.shield(task)

    async def _refresh(self) -> dict[str, ServedModel]:
        async with self._lock:
            generation = self._generation
            try:
                index = await self.backend.repository_index()
            except Exception:
                self._configs.clear()
                raise
            listed = {entry["name"] for entry in index}
            for key in [k for k in self._configs if k[0] not in listed]:
                del self._configs[key]
            await self.catalog.lookup([e["name"] for e in index if e.get("state") != READY])
            models = {}
            for entry in index:
                name, version, state = entry["name"], entry.get("version", ""), entry.get("state", "")
                spec = await self._spec(name, version, generation) if state == READY else None
                if spec is None:  # not loaded, or gone between the index and its config
                    self._configs.pop((name, version), None)  # a reload may bring a new config
                    state = state if state and state != READY else UNAVAILABLE
                    spec = self.catalog.get(name)  # as it was when last seen loaded
                if spec is None or not spec.task:
                    continue  # unknown, or an internal network, tokenizer or pipeline step
                created = self._created.setdefault(name, int(time.time()))
                digest = hashlib.sha256(json.dumps(spec.parameters, sort_keys=True).encode()).hexdigest()[:16]
                models[name] = ServedModel(name, version, state, spec.task, spec.parameters, created, spec.kind, digest)
            now = time.time()
            for name, model in models.items():
                if model.ready:
                    self._ready_since.setdefault(name, now)
                else:
                    self._ready_since.pop(name, None)
            for name in set(self._ready_since) - set(models):
                del self._ready_since[name]
            self._models = models
            if generation == self._generation:
                self._fetched_at = time.monotonic()
            return models

    async def _spec(self, name: str, version: str, generation: int) -> ModelSpec | None:
        """The config of a READY model (cached per version); None when Triton no longer has it loaded."""
        cached = self._configs.get((name, version))
        if cached is None or time.monotonic() - cached[0] > CONFIG_TTL_S:
            try:
                config = await self.backend.model_config(name)
            except ModelNotFound:  # unloaded since the index was read
                return None
            cached = (time.monotonic(), ModelSpec.from_config(name, config))
            await self.catalog.learn(cached[1])
            if generation == self._generation:  # read before an invalidate(): used once, not kept
                self._configs[(name, version)] = cached
        return cached[1]

    async def list(self) -> list[ServedModel]:
        if time.monotonic() - self._fetched_at > self.ttl_s:
            await self.refresh()
        return sorted(self._models.values(), key=lambda m: m.name)

    def cached(self, name: str) -> ServedModel | None:
        """The model as the last index read saw it, without reading again."""
        return self._models.get(name)

    def cached_models(self) -> list[ServedModel]:
        return list(self._models.values())

    def ready_since(self, name: str) -> float:
        """Wall-clock time this replica first saw `name` READY since it last saw it otherwise (0: not ready)."""
        return self._ready_since.get(name, 0.0)

    async def find(self, name: str) -> ServedModel:
        """The served model `name` in whatever state; 404 when the repository has none by that name."""
        model = self._models.get(name)
        if model is None or time.monotonic() - self._fetched_at > self.ttl_s:
            model = (await self.refresh()).get(name)
        if model is None:
            raise ModelNotFound(f"The model `{name}` does not exist or is not loaded", param="model")
        return model

    async def get(self, name: str, *tasks: str) -> ServedModel:
        """The served model `name`, ready, serving one of `tasks`; 404/503/400 envelopes otherwise. A model
        that is not loaded is loaded first when `on_demand` is set (which may answer 503 + Retry-After)."""
        model = self._models.get(name)
        if model is None or not model.ready or time.monotonic() - self._fetched_at > self.ttl_s:
            model = (await self.refresh()).get(name)
        if model is None:
            raise ModelNotFound(f"The model `{name}` does not exist or is not loaded", param="model")
        if tasks and model.task not in tasks:  # before loading anything for it
            raise InvalidRequest(f"The model `{name}` serves {model.task}, not {' or '.join(tasks)}",
                                 param="model", code="model_task_mismatch")
        if not model.ready:
            if self.on_demand is not None:
                return await self.on_demand(model)
            raise ModelNotReady(f"The model `{name}` is {model.state.lower()}; try again shortly", param="model")
        return model


def _retrieve(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()
