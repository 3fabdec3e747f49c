"""/admin/models against FakeBackend: list, load with an allow-listed config override merged into the served
config, unload with polling, 404/409/504."""

from __future__ import annotations

import asyncio
import copy

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


ENCODER = {"name": "emb_encoder", "backend": "onnxruntime", "max_batch_size": 64,
           "input": [{"name": "input_ids", "data_type": "TYPE_INT64", "dims": ["-1"]}],
           "instance_group": [{"name": "emb_encoder_0", "count": 1, "kind": "KIND_CPU"}],
           "dynamic_batching": {"preferred_batch_size": [64], "max_queue_delay_microseconds": "500"},
           "parameters": {"intra_op_thread_count": {"string_value": "0"}, "source": {"string_value": "x"}}}


@pytest.fixture
def loads(backend) -> list[tuple[str, dict | None]]:
    """The configs Triton is asked to load with; `emb_encoder` serves a full config, as Triton returns it."""
    seen = []
    fake_config = backend.model_config

    async def model_config(name):
        return copy.deepcopy(ENCODER) if name == "emb_encoder" else await fake_config(name)

    async def load(name, config=None):
        seen.append((name, config))
        backend.states[name] = "READY"

    backend.model_config, backend.load_model = model_config, load
    return seen


async def test_an_override_is_merged_into_the_served_config(client, backend, loads):
    override = {"instance_group": [{"count": 2, "kind": "KIND_CPU"}],
                "dynamic_batching": {"max_queue_delay_microseconds": 100},
                "parameters": {"intra_op_thread_count": {"string_value": "2"}}}
    r = await client.post("/admin/models/load", json={"model": "emb_encoder", "config": override})
    assert r.status_code == 200 and r.json()["state"] == "READY"
    assert loads == [("emb_encoder", ENCODER | {
        "instance_group": [{"count": 2, "kind": "KIND_CPU"}],
        "dynamic_batching": {"preferred_batch_size": [64], "max_queue_delay_microseconds": 100},
        "parameters": {"intra_op_thread_count": {"string_value": "2"}, "source": {"string_value": "x"}}})]
    assert (await client.post("/v1/embeddings", json={"model": "emb", "input": "x"})).status_code == 200
    r = await client.post("/admin/models/load", json={"model": "emb_encoder", "config": {}})
    assert r.status_code == 200 and loads[-1] == ("emb_encoder", None)  # `{}`: a plain load


THREADS = "config.parameters.intra_op_thread_count"


@pytest.mark.parametrize(("override", "param"), [
    ({"parameters": {"model_file": {"string_value": "/etc/passwd"}}}, "config.parameters.model_file"),
    ({"parameters": {"intra_op_thread_count": {"string_value": "../2"}}}, THREADS),
    ({"parameters": {"model_file": {"string_value": "model.onnx"}}}, "config.parameters.model_file"),
    ({"backend": "python"}, "config.backend"),
    ({"default_model_filename": "evil.onnx"}, "config.default_model_filename"),
    ({"instance_group": [{"count": 1, "profile": ["0"]}]}, "config.instance_group.0.profile"),
    ({"parameters": {"intra_op_thread_count": {"string_value": "-1"}}}, THREADS),
])
async def test_an_override_outside_the_allow_list_is_400_naming_the_key(client, loads, override, param):
    r = await client.post("/admin/models/load", json={"model": "emb_encoder", "config": override})
    assert param in assert_error(r, 400, param=param)["message"]
    assert loads == []  # Triton never saw it
    metrics = (await client.get("/metrics")).text
    assert ('modelgate_admin_operations_total{model="emb_encoder",operation="load",result="refused"} 1.0'
            in metrics)


async def test_the_parameters_allowed_depend_on_the_model_kind(client, backend, loads):
    threads = {"parameters": {"intra_op_thread_count": {"string_value": "2"}}}
    assert_error(await client.post("/admin/models/load", json={"model": "emb", "config": threads}), 400,
                 param="config.parameters.intra_op_thread_count")  # `emb` has no backend: no parameters
    backend.models["llm"]["supports_images"] = "false"
    model_config = backend.model_config

    async def python_backend(name):
        return await model_config(name) | {"backend": "python"}

    backend.model_config = python_backend
    seqs = {"parameters": {"max_num_seqs": {"string_value": "4"}}}
    assert (await client.post("/admin/models/load", json={"model": "llm", "config": seqs})).status_code == 200
    assert loads[-1][1]["parameters"]["max_num_seqs"] == {"string_value": "4"}
    assert loads[-1][1]["parameters"]["openai_task"] == {"string_value": "chat"}  # the rest is kept
    images = {"parameters": {"max_images": {"string_value": "2"}}}
    assert_error(await client.post("/admin/models/load", json={"model": "llm", "config": images}), 400,
                 param="config.parameters.max_images")


async def test_an_override_of_a_model_not_loaded_is_409(client, backend, loads):
    backend.states["emb_encoder"] = "UNAVAILABLE"
    override = {"instance_group": [{"count": 2}]}
    r = await client.post("/admin/models/load", json={"model": "emb_encoder", "config": override})
    assert "without `config`" in assert_error(r, 409, param="config", code="model_not_loaded")["message"]
    assert loads == []


@pytest.mark.parametrize(("still_serving", "says"), [(True, "still serving"), (False, "is not loaded")])
async def test_a_failed_reload_with_an_override_says_what_serves(client, backend, loads, still_serving, says):
    from frontend.errors import from_triton

    async def failing(name, config=None):
        if not still_serving:
            backend.states[name] = "UNAVAILABLE"
        raise from_triton("StatusCode.INVALID_ARGUMENT", f"load failed for model '{name}': no such provider")

    backend.load_model = failing
    override = {"parameters": {"execution_providers": {"string_value": "NoSuchExecutionProvider"}}}
    r = await client.post("/admin/models/load", json={"model": "emb_encoder", "config": override})
    error = assert_error(r, 400, param="config", code="model_load_failed")
    assert says in error["message"] and "no such provider" in error["message"]


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
