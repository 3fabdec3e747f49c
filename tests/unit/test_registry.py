"""frontend/registry.py: one index read for concurrent callers, configs that follow the model's changes."""

from __future__ import annotations

import asyncio

import pytest

from frontend.errors import ServiceUnavailable
from frontend.registry import ModelRegistry


class Backend:
    """The two calls the registry makes, counted; `gate` holds the index read open until a test lets it go."""

    def __init__(self):
        self.state = "READY"
        self.params = {"openai_task": "chat", "context_length": "256"}
        self.index_calls = 0
        self.config_calls = 0
        self.gate: asyncio.Event | None = None
        self.down = False

    async def repository_index(self) -> list[dict]:
        self.index_calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise ServiceUnavailable("Triton is unreachable")
        return [{"name": "m", "version": "1", "state": self.state}] if self.state else []

    async def model_config(self, name: str) -> dict:
        self.config_calls += 1
        return {"name": name, "backend": "python",
                "parameters": {k: {"string_value": v} for k, v in self.params.items()}}


@pytest.fixture
def backend() -> Backend:
    return Backend()


async def test_concurrent_refreshes_share_one_index_read(backend):
    registry = ModelRegistry(backend, ttl_s=60)
    backend.gate = asyncio.Event()
    callers = [asyncio.create_task(registry.refresh()) for _ in range(20)]
    callers += [asyncio.create_task(registry.get("m")) for _ in range(20)]
    await asyncio.sleep(0.01)
    backend.gate.set()
    results = await asyncio.gather(*callers)
    assert backend.index_calls == 1 and backend.config_calls == 1
    assert all(r["m"].ready for r in results[:20]) and all(m.name == "m" for m in results[20:])
    await registry.refresh()  # the next one reads again
    assert backend.index_calls == 2 and backend.config_calls == 1  # config cached while READY


async def test_a_caller_that_leaves_does_not_cancel_the_shared_read(backend):
    registry = ModelRegistry(backend, ttl_s=60)
    backend.gate = asyncio.Event()
    leaving, staying = asyncio.create_task(registry.refresh()), asyncio.create_task(registry.refresh())
    await asyncio.sleep(0.01)
    leaving.cancel()
    backend.gate.set()
    assert (await staying)["m"].ready and backend.index_calls == 1


async def test_a_refresh_after_invalidate_does_not_reuse_the_read_in_flight(backend):
    registry = ModelRegistry(backend, ttl_s=60)
    backend.gate = asyncio.Event()
    before = asyncio.create_task(registry.refresh())
    await asyncio.sleep(0.01)
    registry.invalidate()  # e.g. a reload with an override was accepted meanwhile
    backend.params = {**backend.params, "context_length": "512"}
    after = asyncio.create_task(registry.refresh())
    await asyncio.sleep(0.01)
    backend.gate.set()
    await before
    assert (await after)["m"].parameters["context_length"] == "512"
    assert backend.index_calls == 2


async def test_invalidate_brings_a_changed_config(backend):
    registry = ModelRegistry(backend, ttl_s=60)
    assert (await registry.get("m")).int_param("context_length") == 256
    backend.params = {**backend.params, "context_length": "512"}  # same version, still READY
    registry.invalidate()
    assert (await registry.get("m")).int_param("context_length") == 512


@pytest.mark.parametrize("gap", ["LOADING", "", "down"])
async def test_a_model_seen_reloading_missing_or_triton_down_rereads_its_config(backend, gap):
    registry = ModelRegistry(backend, ttl_s=0)
    assert (await registry.get("m")).int_param("context_length") == 256
    backend.params = {**backend.params, "context_length": "512"}
    if gap == "down":  # Triton restarting: the one that comes back may serve new files
        backend.down = True
        with pytest.raises(ServiceUnavailable):
            await registry.refresh()
        backend.down = False
    else:
        backend.state = gap
        await registry.refresh()
        backend.state = "READY"
    assert (await registry.get("m")).int_param("context_length") == 512


async def test_a_config_changed_elsewhere_is_seen_within_its_ttl(backend, monkeypatch):
    """Another replica (or an operator on Triton) reloads the model with another config, same version."""
    import frontend.registry as registry_module

    registry = ModelRegistry(backend, ttl_s=0)
    before = await registry.get("m")
    backend.params = {**backend.params, "context_length": "512"}
    assert (await registry.get("m")).parameters["context_length"] == "256"  # trusted for a while
    monkeypatch.setattr(registry_module, "CONFIG_TTL_S", 0.0)
    after = await registry.get("m")
    assert after.parameters["context_length"] == "512" and after.version == before.version
    assert after.digest != before.digest  # what the response cache keys on besides the version
