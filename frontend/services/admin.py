"""Model control through Triton's explicit mode: list, load (optionally with a config override), unload.

Triton's unload returns before the model is gone, so both operations poll the repository index until the
model reaches its new state (bounded by `wait_s`) and answer with it. One operation per model at a time
(per frontend process): a second one gets 409. Requests already running on an unloading model finish
(Triton waits for them); new ones get the registry's 404/503 envelopes, because the registry is
invalidated as soon as Triton accepts the operation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import contextmanager

from frontend.errors import APIError, Conflict, InvalidRequest, ModelNotFound, Timeout
from frontend.metrics import Metrics
from frontend.protocol.admin import ModelStatus, ModelStatusList
from frontend.registry import READY, ModelRegistry
from frontend.triton import Backend

log = logging.getLogger(__name__)

UNAVAILABLE = "UNAVAILABLE"
POLL_S = 0.1


def _pick(entries: list[dict]) -> dict:
    """One index entry per model: a READY version if there is one."""
    return next((e for e in entries if e.get("state") == READY), entries[-1])


class AdminService:
    def __init__(self, backend: Backend, registry: ModelRegistry, metrics: Metrics,
                 on_change: Callable[[str], None], wait_s: float):
        self.backend = backend
        self.registry = registry
        self.metrics = metrics
        self.on_change = on_change  # e.g. drop the model's cached responses
        self.wait_s = wait_s
        self._busy: set[str] = set()
        self._tasks: dict[str, str] = {}  # openai_task of every model seen READY: an unloaded one keeps it

    async def _index(self) -> dict[str, dict]:
        grouped: dict[str, list[dict]] = {}
        for entry in await self.backend.repository_index():
            grouped.setdefault(entry["name"], []).append(entry)
        return {name: _pick(entries) for name, entries in grouped.items()}

    def _status(self, entry: dict) -> ModelStatus:
        return ModelStatus(name=entry["name"], version=entry.get("version") or None,
                           state=entry.get("state") or UNAVAILABLE, reason=entry.get("reason", ""),
                           task=self._tasks.get(entry["name"]))

    async def _learn_tasks(self, fresh: bool = False) -> None:
        served = (await self.registry.refresh()).values() if fresh else await self.registry.list()
        self._tasks.update({model.name: model.task for model in served})

    async def list(self) -> ModelStatusList:
        await self._learn_tasks(fresh=True)
        return ModelStatusList(data=[self._status(e) for _, e in sorted((await self._index()).items())])

    @contextmanager
    def _exclusive(self, name: str):
        if name in self._busy:
            raise Conflict(f"Another load or unload of `{name}` is in progress", param="model")
        self._busy.add(name)
        try:
            yield
        finally:
            self._busy.discard(name)

    async def _known(self, name: str) -> None:
        await self._learn_tasks()
        if name not in await self._index():
            raise ModelNotFound(f"The model `{name}` is not in the model repository", param="model")

    async def _wait(self, name: str, done: Callable[[str], bool]) -> ModelStatus:
        deadline = time.monotonic() + self.wait_s
        while True:
            entry = (await self._index()).get(name, {"name": name})
            if done(entry.get("state") or UNAVAILABLE):
                return self._status(entry)
            if time.monotonic() > deadline:
                raise Timeout(f"`{name}` is still {entry.get('state', '').lower()} after {self.wait_s:g}s; "
                              f"follow it with GET /admin/models", param="model")
            await asyncio.sleep(POLL_S)

    def _changed(self, name: str) -> None:
        self.registry.invalidate()
        self.on_change(name)

    async def load(self, name: str, config: dict | None = None) -> ModelStatus:
        with self._exclusive(name):
            await self._known(name)
            log.info("admin: loading %s%s", name, " with a config override" if config else "")
            try:
                await self.backend.load_model(name, config)
            except APIError as error:
                self.metrics.admin_operations.labels("load", name, "error").inc()
                if config is not None and error.status >= 500:  # Triton says INTERNAL for a bad override
                    raise InvalidRequest(f"Triton refused the config override: {error.message}",
                                         param="config") from error
                raise
            finally:
                self._changed(name)
            status = await self._wait(name, lambda state: state == READY)
            self.metrics.admin_operations.labels("load", name, "ok").inc()
            await self._learn_tasks(fresh=True)
            return status.model_copy(update={"task": self._tasks.get(name)})

    async def unload(self, name: str, unload_dependents: bool = False) -> ModelStatus:
        with self._exclusive(name):
            await self._known(name)
            log.info("admin: unloading %s%s", name, " and its dependents" if unload_dependents else "")
            try:
                await self.backend.unload_model(name, unload_dependents)
            except Exception:
                self.metrics.admin_operations.labels("unload", name, "error").inc()
                raise
            finally:
                self._changed(name)
            status = await self._wait(name, lambda state: state not in (READY, "UNLOADING"))
            self._changed(name)
            self.metrics.admin_operations.labels("unload", name, "ok").inc()
            return status
