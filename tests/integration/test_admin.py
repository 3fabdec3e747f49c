"""Admin model control against a real tritonserver of this module's own (unloading a model of the
session's server would break the tests after this one): load, config overrides merged into the served
config, unload with a request in flight, 409 for a concurrent operation."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from export_scripts.__main__ import main as export_main
from frontend.settings import Settings
from launcher.triton import TritonServer
from tests.conftest import REPOSITORY
from tests.stack import run_frontend

MODEL = "all-minilm-l6-v2"
PARTS = [MODEL, f"{MODEL}_tokenizer", f"{MODEL}_encoder"]
SPARE = "spare-tokenizer"  # in the repository, not loaded


@pytest.fixture(scope="module")
def own_repository(tmp_path_factory):
    """The embedding models (linked) plus a spare copy of the tokenizer under another name."""
    assert export_main(["embeddings", f"--repository={REPOSITORY}"]) == 0
    root = tmp_path_factory.mktemp("admin_repository")
    for name in PARTS:
        (root / name).symlink_to(REPOSITORY / name, target_is_directory=True)
    tokenizer = REPOSITORY / f"{MODEL}_tokenizer"
    (root / SPARE).mkdir()
    (root / SPARE / "1").symlink_to(tokenizer / "1", target_is_directory=True)
    config = (tokenizer / "config.pbtxt").read_text().replace(f'name: "{MODEL}_tokenizer"', f'name: "{SPARE}"')
    (root / SPARE / "config.pbtxt").write_text(config)
    return root


@pytest.fixture(scope="module")
def own_triton(own_repository):
    with TritonServer(own_repository, PARTS) as server:
        yield server


@pytest.fixture(scope="module")
def http(own_triton):
    settings = Settings(triton_grpc_url=own_triton.grpc_url, model_index_ttl_s=60, admin_wait_s=120,
                        api_keys="ops=sk-ops")
    with run_frontend(settings) as frontend, httpx.Client(base_url=frontend.url, timeout=300,
                                                          headers={"Authorization": "Bearer sk-ops"}) as client:
        yield client


def served(http) -> list[str]:
    return [m["id"] for m in http.get("/v1/models").json()["data"]]


def state(http, name) -> str:
    return {m["name"]: m["state"] for m in http.get("/admin/models").json()["data"]}[name]


def embed(http, texts):
    return http.post("/v1/embeddings", json={"model": MODEL, "input": texts, "encoding_format": "float"})


def test_list_shows_every_model_with_state_and_task(http):
    models = {m["name"]: m for m in http.get("/admin/models").json()["data"]}
    assert set(PARTS) <= set(models)
    assert models[MODEL]["state"] == "READY" and models[MODEL]["task"] == "embeddings"
    assert models[f"{MODEL}_encoder"]["task"] is None
    assert models[SPARE]["state"] == "UNAVAILABLE" and models[SPARE]["task"] is None  # never loaded


def test_unload_with_a_request_in_flight_then_load_again(http, own_triton):
    texts = [f"{uuid.uuid4()} a sentence long enough to keep the encoder busy for a while " * 3
             for _ in range(2048)]  # unique: Triton's response cache cannot answer them
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(embed, http, texts)
        time.sleep(1.0)
        assert not slow.done(), "the slow request finished before the unload: make it slower"
        unloading = pool.submit(http.post, "/admin/models/unload", json={"model": MODEL})
        states = []
        while not unloading.done() and len(states) < 300:
            states.append(state(http, MODEL))
            if states[-1] != "READY":
                break
            time.sleep(0.05)
        refused = embed(http, ["a new request"])  # sent while the model is unloading
        overlapped = not slow.done()
        finished = slow.result()
        status = unloading.result()
    assert finished.status_code == 200, finished.text  # the request in flight finished normally
    vectors = np.array([d["embedding"] for d in finished.json()["data"]])
    assert vectors.shape == (2048, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert states[-1] == "UNLOADING" and overlapped, states  # Triton waited for the request in flight
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_not_ready"
    assert status.status_code == 200 and status.json()["state"] == "UNAVAILABLE"
    assert MODEL not in served(http)  # at once, although the index TTL is a minute
    r = embed(http, ["after"])
    assert r.status_code in (404, 503) and r.json()["error"]["param"] == "model"
    assert embed_tokens_direct(own_triton)  # the other models kept serving

    loaded = http.post("/admin/models/load", json={"model": MODEL})
    assert loaded.status_code == 200 and loaded.json() | {"reason": ""} == {
        "name": MODEL, "version": "1", "state": "READY", "reason": "", "task": "embeddings"}
    assert MODEL in served(http)
    assert embed(http, ["back again"]).status_code == 200


def embed_tokens_direct(triton) -> bool:
    """The encoder answers straight over gRPC (it was not unloaded with the ensemble)."""
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    ids = np.array([[101, 7592, 102]], dtype=np.int64)
    inputs = []
    for name, array in (("input_ids", ids), ("attention_mask", np.ones_like(ids))):
        tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return client.infer(f"{MODEL}_encoder", inputs).as_numpy("embedding").shape == (1, 384)


def test_load_with_a_config_override(http, own_triton):
    assert http.post("/admin/models/load", json={"model": MODEL}).json()["state"] == "READY"  # whatever came before
    client = grpcclient.InferenceServerClient(own_triton.grpc_url)
    config = client.get_model_config(MODEL, as_json=True)["config"]
    override = {"parameters": {"max_inputs_per_request": {"string_value": "32"}}}
    r = http.post("/admin/models/load", json={"model": MODEL, "config": override})
    assert r.status_code == 200 and r.json()["state"] == "READY"
    # Triton takes an override as the whole config: the admin API merged it into the one served
    assert client.get_model_config(MODEL, as_json=True)["config"] == config | {
        "parameters": config["parameters"] | override["parameters"]}
    assert embed(http, ["still works"]).status_code == 200
    r = http.post("/admin/models/load", json={"model": MODEL, "config": {"platform": "no-such-platform"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "config.platform"
    assert embed(http, ["the loaded version keeps serving"]).status_code == 200
    assert http.post("/admin/models/load", json={"model": MODEL}).json()["state"] == "READY"
    assert client.get_model_config(MODEL, as_json=True)["config"] != config  # Triton keeps the override...
    assert http.post("/admin/models/unload", json={"model": MODEL}).json()["state"] == "UNAVAILABLE"
    assert http.post("/admin/models/load", json={"model": MODEL}).json()["state"] == "READY"
    assert client.get_model_config(MODEL, as_json=True)["config"] == config  # ...until the model is unloaded
    assert embed(http, ["back to the repository's config"]).status_code == 200


def test_an_instance_override_reaches_triton_and_keeps_the_rest(http, own_triton):
    tokenizer = f"{MODEL}_tokenizer"
    client = grpcclient.InferenceServerClient(own_triton.grpc_url)
    override = {"instance_group": [{"count": 2, "kind": "KIND_CPU"}]}
    r = http.post("/admin/models/load", json={"model": tokenizer, "config": override})
    assert r.status_code == 200, r.text
    config = client.get_model_config(tokenizer, as_json=True)["config"]
    assert [(g["count"], g["kind"]) for g in config["instance_group"]] == [(2, "KIND_CPU")]
    assert config["parameters"]["max_input_tokens"]["string_value"] == "256"  # alone, Triton would drop it
    assert embed(http, ["two tokenizer instances"]).status_code == 200


def test_a_concurrent_operation_on_the_same_model_is_409(http):
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(http.post, "/admin/models/load", json={"model": SPARE})
        time.sleep(0.05)
        second = http.post("/admin/models/unload", json={"model": SPARE})
        assert first.result().status_code == 200
    assert second.status_code == 409 and second.json()["error"]["code"] == "operation_in_progress"
    assert http.post("/admin/models/unload", json={"model": SPARE}).json()["state"] == "UNAVAILABLE"
