"""Models on demand against FakeBackend: listing, one load for concurrent first requests, 503 + Retry-After
after the wait, the per-key load cap, idle unload, eviction under a count budget (LRU, pinned, in use), the
404-that-should-be-503 race, metrics and the admin view."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from frontend.app import create_app
from frontend.settings import Settings
from tests.api.conftest import assert_error

EMBED = {"model": "emb", "input": "hello world"}


@contextlib.asynccontextmanager
async def running(backend, **overrides):
    settings = Settings(_env_file=None, **{"model_index_ttl_s": 0, "load_on_demand": True, "load_wait_s": 5,
                                           "loads_per_key_per_minute": 0, "cache_enabled": False,
                                           **overrides})
    app = create_app(settings, backend=backend)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, app.state.services


@pytest.fixture
def loads(backend) -> list[str]:
    """Every load Triton is asked for, in order; a load takes `backend.load_s` seconds."""
    seen: list[str] = []
    backend.load_s = 0.0

    async def load(name, config=None):
        seen.append(name)
        backend.states[name] = "LOADING"
        await asyncio.sleep(backend.load_s)
        backend.states[name] = "READY"

    backend.load_model = load
    return seen


@pytest.fixture
def unloads(backend) -> list[tuple[str, bool]]:
    seen: list[tuple[str, bool]] = []

    async def unload(name, unload_dependents=False):
        seen.append((name, unload_dependents))
        backend.states[name] = "UNAVAILABLE"

    backend.unload_model = unload
    return seen


async def unloaded(client, backend, *names):
    """`names` seen loaded once (so their configs are known), then unloaded behind the frontend's back."""
    assert (await client.get("/v1/models")).status_code == 200
    for name in names:
        backend.states[name] = "UNAVAILABLE"


async def test_models_list_unloaded_models_marked_so_and_the_sdk_reads_them(backend):
    async with running(backend) as (client, _):
        await unloaded(client, backend, "emb")
        body = (await client.get("/v1/models")).json()
        assert {m["id"]: m["status"] for m in body["data"]} == {"emb": {"value": "unloaded"},
                                                                "llm": {"value": "loaded"}}
        assert (await client.get("/v1/models/emb")).json()["status"] == {"value": "unloaded"}
        sdk = openai.AsyncOpenAI(base_url="http://test/v1", api_key="x", http_client=client)
        listed = [m async for m in sdk.models.list()]
        assert [m.id for m in listed] == ["emb", "llm"]  # clients that only read `id` keep working
        assert listed[0].model_extra["status"] == {"value": "unloaded"}
        assert (await client.get("/health/ready")).status_code == 200
        backend.states["llm"] = "UNAVAILABLE"  # nothing loaded: ready to load on demand
        assert (await client.get("/health/ready")).status_code == 200


async def test_without_on_demand_only_loaded_models_are_listed(client, backend):
    assert (await client.get("/v1/models")).status_code == 200
    backend.states["emb"] = "UNAVAILABLE"
    assert [m["id"] for m in (await client.get("/v1/models")).json()["data"]] == ["llm"]
    assert_error(await client.get("/v1/models/emb"), 503, code="model_not_ready")
    assert_error(await client.post("/v1/embeddings", json=EMBED), 503, code="model_not_ready")


async def test_a_request_loads_its_model_and_concurrent_ones_share_the_load(backend, loads):
    backend.load_s = 0.3
    async with running(backend) as (client, services):
        await unloaded(client, backend, "emb")
        answers = await asyncio.gather(*(client.post("/v1/embeddings", json=EMBED) for _ in range(10)))
        assert [r.status_code for r in answers] == [200] * 10
        assert loads == ["emb"]  # one load for ten first requests; emb_encoder was still loaded
        assert services.metrics.model_loads.labels("emb", "ok")._value.get() == 1


async def test_parts_load_first_and_leave_with_the_model(backend, loads, unloads):
    async with running(backend, max_loaded_models=1) as (client, services):
        await unloaded(client, backend, "emb", "emb_encoder")
        assert (await client.post("/v1/embeddings", json=EMBED)).status_code == 200
        assert loads[-2:] == ["emb_encoder", "emb"]  # the encoder it names (token_input_model), then itself
        assert ("llm", True) in unloads  # count budget: one model; llm was the other
        backend.states["llm"] = "READY"
        services.registry.invalidate()
        unloads.clear()
        await services.residency._make_room(services.registry.cached("llm"), adding=False, wait=False)
        assert unloads == [("emb", True), ("emb_encoder", True)]  # with the part nothing else uses


async def test_a_load_longer_than_the_wait_is_503_with_retry_after_and_goes_on(backend, loads):
    backend.load_s = 1.0
    async with running(backend, load_wait_s=0.2) as (client, _):
        await unloaded(client, backend, "emb")
        r = await client.post("/v1/embeddings", json=EMBED)
        assert_error(r, 503, param="model", code="model_not_ready")
        assert int(r.headers["retry-after"]) >= 1
        await asyncio.sleep(1.2)
        assert (await client.post("/v1/embeddings", json=EMBED)).status_code == 200
        assert loads == ["emb"]  # the first load went on; the retry found it ready


async def test_the_task_is_checked_before_anything_loads(backend, loads):
    async with running(backend) as (client, _):
        await unloaded(client, backend, "emb")
        r = await client.post("/v1/chat/completions", json={"model": "emb", "messages": [{"role": "user",
                                                                                           "content": "hi"}]})
        assert_error(r, 400, param="model", code="model_task_mismatch")
        assert_error(await client.post("/v1/embeddings", json={"model": "emb_encoder", "input": "x"}), 404)
        assert loads == []  # neither a wrong task nor an internal model loads anything


async def test_a_key_starts_a_bounded_number_of_loads(backend, loads, unloads):
    keys = "a=sk-a,b=sk-b"
    async with running(backend, api_keys=keys, loads_per_key_per_minute=1) as (client, services):
        a, b = {"Authorization": "Bearer sk-a"}, {"Authorization": "Bearer sk-b"}
        assert (await client.get("/v1/models", headers=a)).status_code == 200
        backend.states["emb"] = backend.states["llm"] = "UNAVAILABLE"
        assert (await client.post("/v1/embeddings", json=EMBED, headers=a)).status_code == 200
        r = await client.post("/v1/chat/completions", headers=a,
                              json={"model": "llm", "messages": [{"role": "user", "content": "hi"}]})
        error = assert_error(r, 429, code="rate_limit_exceeded")
        assert "model loads" in error["message"] and 1 <= int(r.headers["retry-after"]) <= 60
        r = await client.post("/v1/chat/completions", headers=b,
                              json={"model": "llm", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200  # another key's budget
        assert loads == ["emb", "llm"]
        assert services.metrics.rate_limited.labels("loads")._value.get() == 1


async def test_an_operators_unload_sticks_until_an_operators_load(backend, loads, unloads):
    async with running(backend) as (client, _):
        assert (await client.post("/admin/models/unload", json={"model": "emb"})).status_code == 200
        error = assert_error(await client.post("/v1/embeddings", json=EMBED), 503, code="model_not_ready")
        assert "operator" in error["message"] and loads == []
        assert (await client.post("/admin/models/load", json={"model": "emb"})).status_code == 200
        backend.states["emb"] = "UNAVAILABLE"  # now unloaded otherwise (an idle sweep elsewhere)
        assert (await client.post("/v1/embeddings", json=EMBED)).status_code == 200
        assert loads == ["emb", "emb"]


@pytest.mark.parametrize("on_demand", [False, True])
async def test_a_model_gone_since_the_index_was_read_is_503_or_loaded_never_404(backend, loads, on_demand):
    async with running(backend, model_index_ttl_s=60, load_on_demand=on_demand) as (client, services):
        assert (await client.post("/v1/embeddings", json=EMBED)).status_code == 200
        backend.states["emb"] = "UNAVAILABLE"  # unloaded; the registry still has it READY for a minute
        r = await client.post("/v1/embeddings", json=EMBED)
        if on_demand:
            assert r.status_code == 200 and loads == ["emb"]  # loaded again and retried once
        else:
            assert_error(r, 503, param="model", code="model_not_ready")
            assert r.headers["retry-after"] == "1"
            assert services.registry.cached("emb").state == "UNAVAILABLE"  # refreshed at once
        backend.states["llm"] = "UNAVAILABLE"
        r = await client.post("/v1/chat/completions", json={"model": "llm", "stream": True,
                                                            "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == (200 if on_demand else 503), r.text


async def test_idle_models_unload_after_their_ttl_unless_in_use_or_pinned(backend, unloads):
    backend.models["llm"]["idle_unload_s"] = "0"  # its own parameter: never
    async with running(backend, idle_unload_s=0.3) as (client, services):
        assert (await client.post("/v1/embeddings", json=EMBED)).status_code == 200
        release = asyncio.Event()
        infer = backend.infer

        async def slow(model, inputs, outputs, request_id=""):
            await release.wait()
            return await infer(model, inputs, outputs, request_id)

        backend.infer = slow
        in_flight = asyncio.ensure_future(client.post("/v1/embeddings", json=EMBED))
        await asyncio.sleep(0.6)  # two TTLs; the sweeper runs every 0.25 s
        assert unloads == [] and await services.residency.store.in_flight("emb") == 1
        release.set()
        assert (await in_flight).status_code == 200
        for _ in range(40):
            if unloads:
                break
            await asyncio.sleep(0.05)
        assert unloads[0] == ("emb", True) and "llm" not in {n for n, _ in unloads}
        assert services.metrics.model_evictions.labels("emb", "idle")._value.get() == 1


async def test_under_a_count_budget_the_least_recently_used_model_leaves(backend, loads, unloads):
    backend.models["other"] = dict(backend.models["llm"])  # a second chat model
    backend.states["other"] = "READY"
    chat = {"model": "other", "messages": [{"role": "user", "content": "hi"}]}
    async with running(backend, max_loaded_models=2) as (client, services):
        await unloaded(client, backend, "other")
        assert (await client.post("/v1/embeddings", json=EMBED)).status_code == 200
        r = await client.post("/v1/chat/completions", json=chat)
        assert r.status_code == 200 and loads == ["other"]
        assert [n for n, _ in unloads] == ["llm"]  # never asked for: the least recently used
        backend.states["llm"] = "UNAVAILABLE"
        r = await client.post("/v1/chat/completions", json=chat | {"model": "llm"})
        assert r.status_code == 200 and loads == ["other", "llm"]
        assert [n for n, _ in unloads][1:] == ["emb", "emb_encoder"]  # emb was used before `other`
        assert services.metrics.model_evictions.labels("emb", "budget")._value.get() == 1


async def test_when_every_loaded_model_is_pinned_or_in_use_a_load_waits_then_503(backend, loads, unloads):
    async with running(backend, max_loaded_models=1, pinned_models="llm", load_wait_s=0.3) as (client, services):
        await unloaded(client, backend, "emb")
        r = await client.post("/v1/embeddings", json=EMBED)
        error = assert_error(r, 503, code="insufficient_capacity")
        assert "pinned or in use" in error["message"] and r.headers["retry-after"]
        assert loads == [] and unloads == []


async def test_metrics_and_the_admin_view(backend, loads, unloads):
    async with running(backend, idle_unload_s=60, pinned_models="llm") as (client, services):
        await unloaded(client, backend, "emb")
        assert (await client.post("/v1/embeddings", json=EMBED)).status_code == 200
        body = (await client.get("/admin/models")).json()
        listed = {m["name"]: m for m in body["data"]}
        assert listed["emb"]["residency"]["idle_unload_s"] == 60 and not listed["emb"]["residency"]["pinned"]
        assert listed["emb"]["residency"]["last_used"] > 0 and listed["emb"]["residency"]["in_flight"] == 0
        assert listed["emb"]["residency"]["load_seconds"] >= 0
        assert listed["llm"]["residency"]["pinned"] and listed["llm"]["residency"]["idle_unload_s"] is None
        assert listed["emb_encoder"]["residency"] is None  # internal models have none
        assert body["memory"]["load_on_demand"] and body["memory"]["loaded_models"] == 2
        metrics = {s.name: s for f in text_string_to_metric_families((await client.get("/metrics")).text)
                   for s in f.samples if s.labels.get("model") == "emb"}
        assert metrics["modelgate_model_loads_total"].value == 1
        assert metrics["modelgate_model_load_seconds_count"].value == 1


class FakeMeter:
    """Triton's memory as frontend.footprint would measure it: 1 GB of GPU per loaded chat model."""

    def __init__(self, backend):
        self.backend = backend

    async def snapshot(self):
        from frontend.footprint import Snapshot, Usage

        loaded = {n: Usage(10, 10**9) for n, s in self.backend.states.items()
                  if s == "READY" and self.backend.models[n].get("openai_task") == "chat"}
        return Snapshot(Usage(5, 0), loaded)


async def test_a_gpu_budget_evicts_by_measured_footprints_before_or_after_a_load(backend, loads, unloads):
    backend.states.pop("emb")
    for name in ("other", "third"):
        backend.models[name], backend.states[name] = dict(backend.models["llm"]), "READY"
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    async with running(backend, gpu_memory_budget_bytes=int(2.5e9)) as (client, services):
        services.residency.meter = FakeMeter(backend)
        await unloaded(client, backend, "other")  # llm and third loaded: 2 GB
        assert (await client.post("/v1/chat/completions", json=chat | {"model": "third"})).status_code == 200
        assert (await client.post("/v1/chat/completions", json=chat | {"model": "other"})).status_code == 200
        # Never measured, so assumed to fit; measured at its load (1 GB); then Triton is brought back within
        # the budget by evicting the least recently used (llm: never used), never the model just loaded.
        assert loads == ["other"] and [n for n, _ in unloads] == ["llm"]
        assert services.metrics.model_footprint.labels("other", "gpu")._value.get() == 10**9
        assert (await client.get("/admin/models")).json()["memory"]["gpu_bytes"] == 2 * 10**9
        r = await client.post("/v1/chat/completions", json=chat | {"model": "llm"})
        # Not measured here either, so estimated as the largest model measured (1 GB): room is made first.
        assert r.status_code == 200 and loads == ["other", "llm"] and [n for n, _ in unloads] == ["llm", "third"]
