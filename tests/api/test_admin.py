"""/admin/models against FakeBackend: list, load with a config override, unload with polling, 404/409/504."""

from __future__ import annotations

import asyncio

import pytest

from frontend.settings import Settings
from tests.api.conftest import assert_error


@pytest.fixture
def settings() -> Settings:
    return Settings(model_index_ttl_s=60, admin_wait_s=2)  # a long TTL: only invalidate() shows changes


async def test_list_every_model_with_state_and_task(client, backend):
    backend.states["emb_tokenizer"] = "UNAVAILABLE"
    r = await client.get("/admin/models")
    assert r.status_code == 200
    models = {m["name"]: m for m in r.json()["data"]}
    assert set(models) == set(backend.models)
    assert models["emb"]["task"] == "embeddings" and models["emb"]["state"] == "READY"
    assert models["emb_encoder"]["task"] is None
    assert models["emb_tokenizer"]["state"] == "UNAVAILABLE"


async def test_unload_polls_until_gone_and_models_reflect_it_at_once(client, backend):
    assert [m["id"] for m in (await client.get("/v1/models")).json()["data"]] == ["emb", "llm"]

    async def unload(name, unload_dependents=False):  # Triton answers before the model is gone
        backend.states[name] = "UNLOADING"
        asyncio.get_running_loop().call_later(0.3, backend.states.__setitem__, name, "UNAVAILABLE")

    backend.unload_model = unload
    r = await client.post("/admin/models/unload", json={"model": "emb"})
    assert r.status_code == 200 and r.json()["state"] == "UNAVAILABLE" and r.json()["task"] == "embeddings"
    assert [m["id"] for m in (await client.get("/v1/models")).json()["data"]] == ["llm"]
    assert assert_error(await client.post("/v1/embeddings", json={"model": "emb", "input": "x"}), 503)
    listed = {m["name"]: m for m in (await client.get("/admin/models")).json()["data"]}
    assert listed["emb"]["task"] == "embeddings"  # remembered while unloaded


async def test_load_passes_the_config_override_and_serves_again(client, backend):
    backend.states["emb"] = "UNAVAILABLE"
    seen = {}

    async def load(name, config=None):
        seen[name] = config
        backend.states[name] = "READY"

    backend.load_model = load
    override = {"instance_group": [{"count": 2, "kind": "KIND_CPU"}]}
    r = await client.post("/admin/models/load", json={"model": "emb", "config": override})
    assert r.status_code == 200 and r.json()["state"] == "READY"
    assert seen == {"emb": override}
    assert (await client.post("/v1/embeddings", json={"model": "emb", "input": "x"})).status_code == 200


async def test_unknown_model_is_404_and_bad_bodies_400(client):
    assert_error(await client.post("/admin/models/load", json={"model": "nope"}), 404, param="model")
    assert_error(await client.post("/admin/models/unload", json={"model": "nope"}), 404)
    assert_error(await client.post("/admin/models/unload", json={"model": "emb", "dependents": True}), 400)
    assert_error(await client.post("/admin/models/load", json={}), 400, param="model")


async def test_a_second_operation_on_the_same_model_is_409(client, backend):
    release = asyncio.Event()

    async def slow_unload(name, unload_dependents=False):
        if name == "emb":
            await release.wait()
        backend.states[name] = "UNAVAILABLE"

    backend.unload_model = slow_unload
    first = asyncio.create_task(client.post("/admin/models/unload", json={"model": "emb"}))
    await asyncio.sleep(0.1)
    assert_error(await client.post("/admin/models/load", json={"model": "emb"}), 409, code="operation_in_progress")
    assert (await client.post("/admin/models/unload", json={"model": "llm"})).status_code == 200  # another model
    release.set()
    assert (await first).status_code == 200


async def test_a_model_stuck_unloading_is_504_after_the_bounded_wait(client, backend):
    async def stuck(name, unload_dependents=False):
        backend.states[name] = "UNLOADING"

    backend.unload_model = stuck
    error = assert_error(await client.post("/admin/models/unload", json={"model": "emb"}), 504, code="timeout")
    assert "unloading" in error["message"]


async def test_a_failed_load_keeps_its_triton_status(client, backend):
    from frontend.errors import from_triton

    async def failing(name, config=None):
        raise from_triton("StatusCode.INVALID_ARGUMENT", "load failed for model 'emb': bad config")

    backend.load_model = failing
    assert "bad config" in assert_error(await client.post("/admin/models/load", json={"model": "emb"}), 400)["message"]
