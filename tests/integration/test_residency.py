"""Models on demand against a real tritonserver of this module's own, started with nothing loaded, over three
copies of the embeddings ensemble (each with its own tokenizer and encoder processes): a load through the
openai SDK, concurrent first requests (two replicas sharing a real redis-server) causing one load, a model
unloaded behind the frontend's back answered 503 (never 404), idle unload, and eviction under a host-memory
budget that fits two of the three (the least recently used leaves, a pinned one stays), with /metrics parsed.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx
import numpy as np
import openai
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families

from export_scripts.__main__ import main as export_main
from frontend.settings import Settings
from launcher.triton import TritonServer
from tests.conftest import REPOSITORY
from tests.stack import run_frontend

SOURCE = "all-minilm-l6-v2"
A, B, C = "emb-a", "emb-b", "emb-c"  # C is pinned by its config
PARTS = ("", "_tokenizer", "_encoder")
PINNED = '\nparameters {\n  key: "pinned"\n  value {\n    string_value: "true"\n  }\n}\n'


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    """Three copies of the embeddings model, under their own names, sharing the exported files."""
    assert export_main(["embeddings", f"--repository={REPOSITORY}"]) == 0
    root = tmp_path_factory.mktemp("residency_repository")
    for copy in (A, B, C):
        for suffix in PARTS:
            source, target = REPOSITORY / f"{SOURCE}{suffix}", root / f"{copy}{suffix}"
            target.mkdir()
            (target / "1").symlink_to(source / "1", target_is_directory=True)
            config = (source / "config.pbtxt").read_text().replace(SOURCE, copy)
            (target / "config.pbtxt").write_text(config + (PINNED if copy == C and not suffix else ""))
    return root


@pytest.fixture(scope="module")
def triton(repository):
    with TritonServer(repository, []) as server:  # nothing loaded: everything on demand
        yield server


@pytest.fixture
def grpc(triton):
    """Triton's own client; every test starts with nothing loaded."""
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    for copy in (A, B, C):
        if states(client).get(copy) == "READY":
            client.unload_model(copy, unload_dependents=True)
    wait_for(lambda: all(s != "READY" and s != "UNLOADING" for s in states(client).values()), 60)
    return client


def states(client) -> dict[str, str]:
    return {m["name"]: m.get("state", "") for m in client.get_model_repository_index(as_json=True)["models"]}


def wait_for(condition, timeout_s: float, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(interval_s)


def settings(triton, repository, **overrides) -> Settings:
    return Settings(_env_file=None, **{"triton_grpc_url": triton.grpc_url, "load_on_demand": True, "load_wait_s": 120,
                                       "model_repository": str(repository), "cache_enabled": False, **overrides})


def sdk(frontend) -> openai.OpenAI:
    return openai.OpenAI(base_url=frontend.base_url, api_key="unused", max_retries=0, timeout=180)


def embed(frontend, model: str, text: str = "a sentence") -> np.ndarray:
    data = sdk(frontend).embeddings.create(model=model, input=[text], encoding_format="float").data
    return np.array(data[0].embedding)


def metric(frontend, name: str, **labels) -> float:
    text = httpx.get(f"{frontend.url}/metrics", timeout=30).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def admin(frontend) -> dict:
    return httpx.get(f"{frontend.url}/admin/models", timeout=60).json()


def test_a_request_loads_its_model_through_the_sdk(triton, repository, grpc):
    with run_frontend(settings(triton, repository)) as frontend:
        listed = {m.id: m.model_extra["status"]["value"] for m in sdk(frontend).models.list()}
        assert listed == {A: "unloaded", B: "unloaded", C: "unloaded"}  # read from the repository folder
        vector = embed(frontend, A, "hello world")
        assert vector.shape == (384,) and abs(np.linalg.norm(vector) - 1) < 1e-4
        assert {states(grpc)[f"{A}{s}"] for s in PARTS} == {"READY"} and states(grpc)[B] != "READY"
        assert {m.id: m.model_extra["status"]["value"] for m in sdk(frontend).models.list()}[A] == "loaded"
        assert metric(frontend, "modelgate_model_loads_total", model=A, result="ok") == 1
        assert metric(frontend, "modelgate_model_load_seconds_count", model=A) == 1
        residency = {m["name"]: m for m in admin(frontend)["data"]}[A]["residency"]
        footprint = residency["footprint"]
        assert footprint["measured"] == "now" and 50e6 < footprint["host_bytes"] < 2e9, footprint
        assert residency["last_used"] >= time.time() - 60 and residency["load_seconds"] > 0


def test_concurrent_first_requests_on_two_replicas_load_once(triton, repository, grpc, redis_url):
    shared = settings(triton, repository, redis_url=redis_url)
    with ExitStack() as stack:
        replicas = [stack.enter_context(run_frontend(shared)) for _ in range(2)]
        with ThreadPoolExecutor(8) as pool:
            vectors = list(pool.map(lambda i: embed(replicas[i % 2], B, "same text"), range(8)))
        assert all(np.allclose(v, vectors[0], atol=1e-5) for v in vectors)
        loads = [metric(r, "modelgate_model_loads_total", model=B) for r in replicas]
        assert sum(loads) == 1, loads  # one load on Triton, whichever replica made it


def test_a_model_unloaded_behind_the_frontends_back_is_503_not_404(triton, repository, grpc):
    with run_frontend(settings(triton, repository, load_on_demand=False, model_index_ttl_s=60)) as frontend:
        grpc.load_model(A)
        assert httpx.get(f"{frontend.url}/v1/models", timeout=30).status_code == 200  # READY for a minute
        assert embed(frontend, A).shape == (384,)
        grpc.unload_model(A, unload_dependents=True)
        wait_for(lambda: states(grpc)[A] == "UNAVAILABLE", 60)
        with pytest.raises(openai.InternalServerError) as info:  # 503: the SDK's server error
            embed(frontend, A)
        assert info.value.status_code == 503 and info.value.code == "model_not_ready"
        assert info.value.response.headers["retry-after"] == "1"
    with run_frontend(settings(triton, repository, model_index_ttl_s=60)) as frontend:  # on demand: loaded again
        grpc.load_model(A)
        assert embed(frontend, A).shape == (384,)
        grpc.unload_model(A, unload_dependents=True)
        wait_for(lambda: states(grpc)[A] == "UNAVAILABLE", 60)
        assert embed(frontend, A).shape == (384,)
        assert metric(frontend, "modelgate_model_loads_total", model=A, result="ok") == 1


def test_idle_models_unload_after_their_ttl_pinned_ones_stay(triton, repository, grpc):
    with run_frontend(settings(triton, repository, idle_unload_s=1.5)) as frontend:
        embed(frontend, C)
        embed(frontend, A)
        assert states(grpc)[A] == "READY"
        wait_for(lambda: {states(grpc)[f"{A}{s}"] for s in PARTS} == {"UNAVAILABLE"}, 30)  # with its parts
        assert states(grpc)[C] == "READY"  # pinned
        assert metric(frontend, "modelgate_model_evictions_total", model=A, reason="idle") == 1
        assert {m["name"]: m for m in admin(frontend)["data"]}[C]["residency"]["pinned"]


def test_under_a_budget_for_two_the_least_recently_used_leaves_and_the_pinned_stays(triton, repository, grpc):
    with run_frontend(settings(triton, repository)) as frontend:  # measure two models' worth of Triton
        embed(frontend, A)
        embed(frontend, B)
        view = admin(frontend)
        two = view["memory"]["host_bytes"]
        one = {m["name"]: m for m in view["data"]}[A]["residency"]["footprint"]["host_bytes"]
        # The footprint is honest: unloading A frees about that much of Triton's memory.
        grpc.unload_model(A, unload_dependents=True)
        wait_for(lambda: admin(frontend)["memory"]["host_bytes"] < two - one / 2, 30)
        time.sleep(0.5)
        freed = two - admin(frontend)["memory"]["host_bytes"]
        assert abs(freed - one) < one * 0.25, (freed, one)
    grpc.unload_model(B, unload_dependents=True)
    wait_for(lambda: all(states(grpc)[c] == "UNAVAILABLE" for c in (A, B)), 60)
    budget = two + one // 2  # two models fit, a third does not
    with run_frontend(settings(triton, repository, host_memory_budget_bytes=budget)) as frontend:
        embed(frontend, B)
        embed(frontend, A)  # B is now the least recently used
        embed(frontend, C)
        assert (states(grpc)[A], states(grpc)[B], states(grpc)[C]) == ("READY", "UNAVAILABLE", "READY")
        assert metric(frontend, "modelgate_model_evictions_total", model=B, reason="budget") == 1
        embed(frontend, A)  # C (pinned) is now the least recently used
        embed(frontend, B)
        assert (states(grpc)[A], states(grpc)[B], states(grpc)[C]) == ("UNAVAILABLE", "READY", "READY")
        memory = admin(frontend)["memory"]
        assert memory["host_bytes"] <= budget and memory["host_budget_bytes"] == budget
