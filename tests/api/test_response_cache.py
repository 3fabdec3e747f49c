"""The response cache on the app in-process (frontend/cache.py, looked up in admission): hits are the miss's bytes."""

from __future__ import annotations

import httpx
import pytest

from frontend.app import create_app
from frontend.settings import Settings
from tests.api.conftest import assert_error

EMBED = {"model": "emb", "input": ["a", "b c"]}
ALICE, BOB = {"Authorization": "Bearer sk-alice"}, {"Authorization": "Bearer sk-bob"}
CHAT = {"model": "llm", "messages": [{"role": "user", "content": "hello"}], "temperature": 0}


@pytest.fixture
def settings() -> Settings:
    return Settings(model_index_ttl_s=0, api_keys="alice=sk-alice,bob=sk-bob")


async def test_hit_is_the_miss_byte_for_byte_without_calling_triton(client, backend):
    miss = await client.post("/v1/embeddings", json=EMBED, headers=ALICE)
    calls = len(backend.calls)
    hit = await client.post("/v1/embeddings", json=EMBED, headers=ALICE)
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("miss", "hit")
    assert hit.content == miss.content and hit.headers["content-type"] == miss.headers["content-type"]
    assert len(backend.calls) == calls
    assert hit.headers["x-request-id"] != miss.headers["x-request-id"]  # per response, not cached


async def test_any_output_field_is_part_of_the_key_but_user_is_not(client, backend):
    await client.post("/v1/embeddings", json=EMBED, headers=ALICE)
    r = await client.post("/v1/embeddings", json={**EMBED, "user": "someone"}, headers=ALICE)
    assert r.headers["x-cache"] == "hit"
    for changed in ({"encoding_format": "base64"}, {"dimensions": 3}, {"input": ["a"]}):
        assert (await client.post("/v1/embeddings", json={**EMBED, **changed}, headers=ALICE)).headers["x-cache"] == "miss"


async def test_entries_are_per_key_by_default(client):
    await client.post("/v1/embeddings", json=EMBED, headers=ALICE)
    assert (await client.post("/v1/embeddings", json=EMBED, headers=BOB)).headers["x-cache"] == "miss"


async def test_global_scope_shares_entries(backend):
    app = create_app(Settings(model_index_ttl_s=0, api_keys="alice=sk-alice,bob=sk-bob", cache_scope="global"),
                     backend=backend)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        await c.post("/v1/embeddings", json=EMBED, headers=ALICE)
        assert (await c.post("/v1/embeddings", json=EMBED, headers=BOB)).headers["x-cache"] == "hit"


@pytest.mark.parametrize("headers, label, stored", [
    ({"Cache-Control": "no-cache"}, "bypass", True),
    ({"x-cache-bypass": "1"}, "bypass", True),
    ({"Cache-Control": "no-store"}, "bypass", False),
])
async def test_bypass_headers(client, backend, headers, label, stored):
    await client.post("/v1/embeddings", json=EMBED, headers=ALICE)
    calls = len(backend.calls)
    other = {**EMBED, "input": ["fresh"]}
    r = await client.post("/v1/embeddings", json=EMBED, headers={**ALICE, **headers})
    assert r.headers["x-cache"] == label and len(backend.calls) > calls  # computed again
    await client.post("/v1/embeddings", json=other, headers={**ALICE, **headers})
    again = await client.post("/v1/embeddings", json=other, headers=ALICE)
    assert again.headers["x-cache"] == ("hit" if stored else "miss")


async def test_errors_are_not_cached(client, backend):
    body = {"model": "emb", "input": "x", "dimensions": 99}
    assert_error(await client.post("/v1/embeddings", json=body, headers=ALICE), 400)
    r = await client.post("/v1/embeddings", json=body, headers=ALICE)
    assert r.headers["x-cache"] == "miss"
    r = await client.post("/v1/embeddings", json={"model": "nope", "input": "x"}, headers=ALICE)
    assert_error(r, 404)
    assert "x-cache" not in r.headers


async def test_greedy_chat_stream_is_replayed_as_the_same_sse_bytes(client, backend):
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    miss = await client.post("/v1/chat/completions", json=body, headers=ALICE)
    streams = len(backend.llm.prompts)
    hit = await client.post("/v1/chat/completions", json=body, headers=ALICE)
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("miss", "hit")
    assert hit.headers["content-type"].startswith("text/event-stream")
    assert hit.content == miss.content and hit.content.endswith(b"data: [DONE]\n\n")
    assert len(backend.llm.prompts) == streams
    non_stream = await client.post("/v1/chat/completions", json=CHAT, headers=ALICE)
    assert non_stream.headers["x-cache"] == "miss"  # `stream` changes the response: another entry


async def test_sampled_chat_is_never_cached_but_seeded_is(client):
    sampled = {**CHAT, "temperature": 0.8}
    for _ in range(2):
        assert "x-cache" not in (await client.post("/v1/chat/completions", json=sampled, headers=ALICE)).headers
    seeded = {**sampled, "seed": 7}
    await client.post("/v1/chat/completions", json=seeded, headers=ALICE)
    assert (await client.post("/v1/chat/completions", json=seeded, headers=ALICE)).headers["x-cache"] == "hit"


async def test_broken_stream_is_not_stored(client, backend):
    backend.llm.fail_after = 1
    body = {**CHAT, "stream": True}
    r = await client.post("/v1/chat/completions", json=body, headers=ALICE)
    assert b'"error"' in r.content
    backend.llm.fail_after = None
    assert (await client.post("/v1/chat/completions", json=body, headers=ALICE)).headers["x-cache"] == "miss"


async def test_unloading_a_model_drops_its_entries(client):
    admin = {"Authorization": "Bearer sk-alice"}  # env keys carry every scope
    await client.post("/v1/embeddings", json=EMBED, headers=ALICE)
    assert (await client.post("/admin/models/unload", json={"model": "emb"}, headers=admin)).status_code == 200
    assert (await client.post("/admin/models/load", json={"model": "emb"}, headers=admin)).status_code == 200
    assert (await client.post("/v1/embeddings", json=EMBED, headers=ALICE)).headers["x-cache"] == "miss"


async def test_a_model_reloaded_with_another_config_is_not_answered_from_the_old_one(client, backend, monkeypatch):
    import frontend.registry as registry_module

    monkeypatch.setattr(registry_module, "CONFIG_TTL_S", 0.0)  # as if the reload happened on another replica
    await client.post("/v1/embeddings", json=EMBED, headers=ALICE)
    assert (await client.post("/v1/embeddings", json=EMBED, headers=ALICE)).headers["x-cache"] == "hit"
    backend.models["emb"] = {**backend.models["emb"], "max_inputs_per_request": "1"}  # same version, new config
    assert (await client.post("/v1/embeddings", json=EMBED, headers=ALICE)).headers["x-cache"] == "miss"
