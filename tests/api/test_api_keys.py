"""API keys, scopes and per-key rate limits on the app in-process (frontend/operations.py Gate)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from frontend.auth import hash_key
from frontend.settings import Settings
from tests.api.conftest import assert_error

EMBED = {"model": "emb", "input": "a b c d"}  # FakeBackend counts 6 tokens
TEAM, OPS, TINY, SOLO = ({"Authorization": f"Bearer {k}"} for k in ("sk-team", "sk-ops", "sk-tiny", "sk-solo"))


@pytest.fixture
def settings(tmp_path) -> Settings:
    keys = [
        {"name": "team", "key_sha256": hash_key("sk-team"), "scopes": ["inference"],
         "limits": {"requests_per_minute": 3}},
        {"name": "ops", "key_sha256": hash_key("sk-ops"), "scopes": ["admin"]},
        {"name": "tiny", "key_sha256": hash_key("sk-tiny"), "limits": {"tokens_per_minute": 10}},
        {"name": "solo", "key_sha256": hash_key("sk-solo"), "limits": {"max_concurrent": 1}},
    ]
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": keys}))
    return Settings(model_index_ttl_s=0, api_keys_file=str(path), metrics_public=False, cache_enabled=False)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-nope"}, {"Authorization": "sk-team"}])
async def test_missing_or_wrong_key_is_401_envelope(client, backend, headers):
    assert_error(await client.post("/v1/embeddings", json=EMBED, headers=headers), 401, code="invalid_api_key")
    assert backend.calls == []


async def test_scopes_keep_inference_and_admin_apart(client):
    assert (await client.post("/v1/embeddings", json=EMBED, headers=TEAM)).status_code == 200
    assert_error(await client.get("/admin/models", headers=TEAM), 403, code="insufficient_permissions")
    assert_error(await client.post("/v1/embeddings", json=EMBED, headers=OPS), 403)
    assert (await client.get("/admin/models", headers=OPS)).status_code == 200


async def test_health_is_open_and_metrics_keyed_by_setting(client):
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/health/ready")).status_code == 200
    assert_error(await client.get("/metrics"), 401)
    assert_error(await client.get("/metrics", headers=TEAM), 403)
    assert (await client.get("/metrics", headers=OPS)).status_code == 200
    assert (await client.get("/admin/metrics", headers=OPS)).status_code == 200


async def test_requests_per_minute_429_with_openai_headers(client):
    for remaining in (2, 1, 0):
        r = await client.post("/v1/embeddings", json=EMBED, headers=TEAM)
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        assert r.headers["x-ratelimit-remaining-requests"] == str(remaining)
        assert r.headers["x-ratelimit-reset-requests"].endswith("s")
    r = await client.post("/v1/embeddings", json=EMBED, headers=TEAM)
    error = assert_error(r, 429, code="rate_limit_exceeded")
    assert error["type"] == "requests" and "requests per minute" in error["message"]
    assert 1 <= int(r.headers["retry-after"]) <= 60 and r.headers["x-ratelimit-remaining-requests"] == "0"
    assert (await client.post("/v1/embeddings", json=EMBED, headers=TINY)).status_code == 200  # per key


async def test_tokens_per_minute_counted_from_usage(client):
    r = await client.post("/v1/embeddings", json={"model": "emb", "input": "a"}, headers=TINY)  # 3 tokens
    assert r.headers["x-ratelimit-remaining-tokens"] == "10"  # as of admission
    r = await client.post("/v1/embeddings", json=EMBED, headers=TINY)  # 6 more
    assert r.headers["x-ratelimit-remaining-tokens"] == "7"
    r = await client.post("/v1/embeddings", json={"model": "emb", "input": "x"}, headers=TINY)  # 1 left: admitted
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining-tokens"] == "1"
    r = await client.post("/v1/embeddings", json=EMBED, headers=TINY)
    assert "tokens per minute" in assert_error(r, 429, code="rate_limit_exceeded")["message"]
    assert r.headers["x-ratelimit-remaining-tokens"] == "0"


async def test_streams_are_charged_prompt_and_completion_without_include_usage(client, backend):
    backend.llm.eos_after = 4
    body = {"model": "llm", "messages": [{"role": "user", "content": "one two three"}], "stream": True}
    r = await client.post("/v1/chat/completions", json=body, headers=TINY)
    assert r.status_code == 200 and '"usage"' not in r.text  # the client asked for no usage; it is charged anyway
    r = await client.post("/v1/embeddings", json={"model": "emb", "input": "x"}, headers=TINY)
    # The fake counts the rendered prompt's words (3) and streams 4 words: 7 of 10 tokens spent.
    assert r.headers["x-ratelimit-remaining-tokens"] == "3"


async def test_concurrent_requests_over_the_limit_are_429(client, backend):
    started, gate = asyncio.Event(), asyncio.Event()
    infer = backend.infer

    async def slow(*args, **kwargs):
        started.set()
        await gate.wait()
        return await infer(*args, **kwargs)

    backend.infer = slow
    first = asyncio.create_task(client.post("/v1/embeddings", json=EMBED, headers=SOLO))
    await asyncio.wait_for(started.wait(), 5)
    second = await client.post("/v1/embeddings", json=EMBED, headers=SOLO)
    assert "concurrent" in assert_error(second, 429)["message"]
    gate.set()
    assert (await first).status_code == 200
    assert (await client.post("/v1/embeddings", json=EMBED, headers=SOLO)).status_code == 200  # slot back


async def test_keys_never_reach_the_logs(client, caplog):
    caplog.set_level(logging.DEBUG)
    await client.post("/v1/embeddings", json=EMBED, headers={"Authorization": "Bearer sk-secret-guess"})
    await client.post("/v1/embeddings", json=EMBED, headers=TEAM)
    assert "sk-secret-guess" not in caplog.text and "sk-team" not in caplog.text


async def test_auth_off_is_announced_loudly(backend, caplog):
    from frontend.app import create_app

    caplog.set_level(logging.INFO)
    app = create_app(Settings(model_index_ttl_s=0), backend=backend)
    async with app.router.lifespan_context(app):
        pass
    assert any(r.levelno == logging.WARNING and "AUTHENTICATION IS OFF" in r.getMessage() for r in caplog.records)
