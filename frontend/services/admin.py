"""Model control through Triton's explicit mode: list, load (optionally with a config override), unload.

A config override is allow-listed (`check_override`: the fields of protocol.admin.ConfigOverride, the
`parameters` triton_models.contract declares for the model's kind, no path-like values) and merged into the
config the model serves, because Triton's load takes the override as the *whole* config: fields left out
would be lost (seen on 2.51: a tokenizer lost its `parameters`, an encoder its inputs). Overrides therefore
apply to a loaded model and add up over reloads; Triton keeps them across plain reloads too, until the model
is unloaded (then a load reads the repository's config again).
A reload that fails leaves the version loaded before serving (Triton swaps only once the new one is ready),
and the error says which of the two happened.

Triton's unload returns before the model is gone, so both operations poll the repository index until the
model reaches its new state (bounded by `wait_s`) and answer with it. One operation per model at a time
(per frontend process): a second one gets 409. Requests already running on an unloading model finish
(Triton waits for them); new ones get the registry's 404/503 envelopes, because the registry is
invalidated as soon as Triton accepts the operation.

With models on demand (frontend/residency.py) the list shows each served model's residency (pinned, idle TTL,
last use, requests in flight, footprint) and Triton's memory against the budgets; an operator's unload
parks the model (not loaded on demand again) until an operator loads it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable
from contextlib import contextmanager

from pydantic import ValidationError

from frontend.errors import APIError, Conflict, InvalidRequest, ModelNotFound, ServiceUnavailable, Timeout
from frontend.metrics import Metrics
from frontend.protocol.admin import (
    ConfigOverride,
    ListedModel,
    ModelResidency,
    ModelStatus,
    ModelStatusList,
    TritonMemory,
)
from frontend.registry import READY, ModelRegistry
from frontend.residency import Residency
from frontend.triton import Backend
from triton_models import contract

log = logging.getLogger(__name__)

UNAVAILABLE = "UNAVAILABLE"
POLL_S = 0.1


def _pick(entries: list[dict]) -> dict:
    """One index entry per model: a READY version if there is one."""
    return next((e for e in entries if e.get("state") == READY), entries[-1])


def path_like(value: str) -> bool:
    """A value a model could join onto a folder to reach outside it."""
    return any(mark in value for mark in ("/", "\\", "..", "\0")) or value.startswith("~")


def _refused(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"`{param}` {why}", param=param, code="override_not_allowed")


def check_override(raw: dict, kind: str) -> dict:
    """The override in Triton's JSON shape, or a 400 naming the first key a load may not change."""
    allowed = contract.fields(kind)
    for key in raw:
        if key not in allowed:
            raise _refused(f"config.{key}", f"cannot be overridden for a {kind} model; a load may change "
                                            f"{', '.join(sorted(allowed))}")
    try:
        override = ConfigOverride.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = ".".join(["config", *map(str, error["loc"])])
        if error["type"] == "extra_forbidden":
            raise _refused(param, "cannot be overridden") from None
        raise InvalidRequest(f"`{param}`: {error['msg']}", param=param) from None
    declared = contract.PARAMETERS[kind]
    for key, value in (override.parameters or {}).items():
        param = f"config.parameters.{key}"
        if path_like(value.string_value) or path_like(key):
            raise _refused(param, "looks like a path: the model repository chooses files, a load does not")
        if key not in declared:
            raise _refused(param, f"is not a parameter a {kind} model takes at load time; it takes "
                                  f"{', '.join(sorted(declared)) or 'none'}")
        problem = declared[key].problem(value.string_value)
        if problem:
            raise InvalidRequest(f"`{param}` {problem}", param=param)
    return override.model_dump(exclude_unset=True)


def merge_config(current: dict, override: dict) -> dict:
    """The current config with the override applied: `parameters` and `dynamic_batching` key by key (one
    level), the other fields replaced whole."""
    merged = copy.deepcopy(current)
    for key, value in override.items():
        merged[key] = {**merged.get(key, {}), **value} if key in ("parameters", "dynamic_batching") else value
    return merged


class AdminService:
    def __init__(self, backend: Backend, registry: ModelRegistry, metrics: Metrics,
                 on_change: Callable[[str], None], wait_s: float, residency: Residency | None = None):
        self.backend = backend
        self.registry = registry
        self.metrics = metrics
        self.on_change = on_change  # e.g. drop the model's cached responses
        self.wait_s = wait_s
        self.residency = residency
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
        statuses = [ListedModel(**self._status(e).model_dump()) for _, e in sorted((await self._index()).items())]
        if self.residency is None:
            return ModelStatusList(data=statuses)
        details, memory = await self.residency.describe(await self.registry.list())
        for status in statuses:
            if status.name in details:
                status.residency = ModelResidency.model_validate(details[status.name])
        return ModelStatusList(data=statuses, memory=TritonMemory.model_validate(memory))

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

    async def _serving(self, name: str) -> bool:
        return (await self._index()).get(name, {}).get("state") == READY

    async def _merged(self, name: str, override: dict) -> dict:
        """The config to load: the override, checked against the model's kind, merged into its current one."""
        try:
            if not await self._serving(name):
                raise Conflict(f"`{name}` is not loaded: load it without `config` first (an override is "
                               f"merged into the config the model serves)",
                               param="config", code="model_not_loaded")
            current = await self.backend.model_config(name)
            return merge_config(current, check_override(override, contract.model_kind(current)))
        except (InvalidRequest, Conflict):
            self.metrics.admin_operations.labels("load", name, "refused").inc()
            raise

    async def _load_failed(self, name: str, error: APIError, overridden: bool) -> APIError:
        """The error of a failed load, saying whether the version loaded before still serves."""
        outcome = ("the version loaded before is still serving" if await self._serving(name)
                   else f"`{name}` is not loaded")
        # A failed override is the caller's to fix (400); otherwise Triton's own status stands.
        kind = InvalidRequest if overridden else type(error)
        return kind(f"Loading `{name}` failed and {outcome}: {error.message}",
                    param="config" if overridden else "model", code="model_load_failed")

    async def load(self, name: str, config: dict | None = None) -> ModelStatus:
        with self._exclusive(name):
            await self._known(name)
            config = await self._merged(name, config) if config else None  # {}: a plain load
            log.info("admin: loading %s%s", name, " with a config override" if config else "")
            try:
                await self.backend.load_model(name, config)
            except APIError as error:
                self.metrics.admin_operations.labels("load", name, "error").inc()
                if isinstance(error, (ServiceUnavailable, Timeout)):  # Triton itself, not the load, failed
                    raise
                raise await self._load_failed(name, error, overridden=bool(config)) from error
            finally:
                self._changed(name)
            status = await self._wait(name, lambda state: state == READY)
            if self.residency is not None:
                await self.residency.park(name, False)
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
            if self.residency is not None:
                await self.residency.park(name, True)
            self._changed(name)
            self.metrics.admin_operations.labels("unload", name, "ok").inc()
            return status
