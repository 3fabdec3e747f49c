"""CORS (frontend/cors.py): off by default; for allowed origins, preflights without a key and every answer,
errors included, readable by the page; refused origins get no CORS header at all."""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import ValidationError

from frontend.app import create_app
from frontend.auth import hash_key
from frontend.cors import EXPOSED, HEADERS
from frontend.settings import Settings
from tests.api.conftest import assert_error

APP = "https://app.example.com"
EVIL = "https://evil.example.net"
KEY = {"Authorization": "Bearer sk-team"}
EMBED = {"model": "emb", "input": "a b c"}


def preflight(origin: str, method: str = "POST", headers: str = "authorization,content-type") -> dict:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


def cors_headers(response: httpx.Response) -> dict:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


@pytest.fixture
def settings(tmp_path) -> Settings:
    keys = [{"name": "team", "key_sha256": hash_key("sk-team"), "scopes": ["inference"],
             "limits": {"requests_per_minute": 2}}]
    (tmp_path / "keys.json").write_text(json.dumps({"keys": keys}))
    return Settings(model_index_ttl_s=0, max_body_bytes=4096, api_keys_file=str(tmp_path / "keys.json"),
                    cors_origins=f"{APP}, http://localhost:5173")


async def test_preflight_needs_no_key_and_allows_what_the_sdk_sends(client, backend):
    sdk_headers = ",".join(h.lower() for h in HEADERS)
    r = await client.options("/v1/chat/completions", headers=preflight(APP, headers=sdk_headers))
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == APP
    assert set(r.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST", "DELETE", "OPTIONS"}
    allowed = {h.lower() for h in r.headers["access-control-allow-headers"].split(", ")}
    assert {"authorization", "content-type", "x-stainless-os", "x-stainless-retry-count", "openai-organization",
            "openai-project"} <= allowed
    assert "access-control-allow-credentials" not in r.headers
    assert backend.calls == []


async def test_answers_to_an_allowed_origin_expose_what_clients_read(client):
    r = await client.post("/v1/embeddings", json=EMBED, headers={**KEY, "Origin": "http://localhost:5173"})
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
    exposed = set(r.headers["access-control-expose-headers"].split(", "))
    assert {"x-request-id", "retry-after", "x-ratelimit-remaining-requests"} <= exposed == set(EXPOSED)
    assert "access-control-allow-credentials" not in r.headers


@pytest.mark.parametrize(("request_args", "status"), [
    ({"method": "POST", "url": "/v1/embeddings", "json": EMBED}, 401),  # no key
    ({"method": "POST", "url": "/v1/nothing", "json": {}}, 404),  # unknown URL
    ({"method": "POST", "url": "/v1/embeddings", "content": b"x" * 5000}, 413),  # a middleware's answer
])
async def test_errors_to_an_allowed_origin_carry_cors_headers(client, request_args, status):
    r = await client.request(**request_args, headers={"Origin": APP})
    assert_error(r, status)
    assert r.headers["access-control-allow-origin"] == APP


async def test_a_rate_limited_page_can_read_retry_after(client):
    for _ in range(2):
        assert (await client.post("/v1/embeddings", json=EMBED, headers={**KEY, "Origin": APP})).status_code == 200
    r = await client.post("/v1/embeddings", json=EMBED, headers={**KEY, "Origin": APP})
    assert_error(r, 429)
    assert r.headers["access-control-allow-origin"] == APP and int(r.headers["retry-after"]) >= 1
    assert "retry-after" in r.headers["access-control-expose-headers"]


async def test_a_refused_origin_gets_no_cors_header_at_all(client):
    assert cors_headers(await client.post("/v1/embeddings", json=EMBED, headers={**KEY, "Origin": EVIL})) == {}
    r = await client.options("/v1/chat/completions", headers=preflight(EVIL))
    assert_error(r, 405)  # the API's own answer to OPTIONS: the browser refuses the request
    assert cors_headers(r) == {}
    # An allowed origin's name inside another origin is not that origin.
    assert cors_headers(await client.get("/v1/models", headers={**KEY, "Origin": APP + ".evil.net"})) == {}


async def test_off_by_default(backend):
    app = create_app(Settings(model_index_ttl_s=0), backend=backend)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        assert cors_headers(await c.get("/v1/models", headers={"Origin": APP})) == {}
        assert cors_headers(await c.options("/v1/models", headers=preflight(APP, "GET"))) == {}


async def test_any_origin_only_when_asked_for(backend):
    app = create_app(Settings(model_index_ttl_s=0, cors_origins="*"), backend=backend)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.get("/v1/models", headers={"Origin": EVIL})
        assert r.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in r.headers
        r = await c.options("/v1/models", headers=preflight(EVIL, "GET", "authorization"))
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("origins", ["https://app.example.com/", "https://app.example.com/path", "app.example.com",
                                     "null", "*, https://app.example.com"])
def test_origins_a_browser_never_sends_are_refused_at_start(origins):
    with pytest.raises(ValidationError, match="cors_origins"):
        Settings(cors_origins=origins)


def test_origins_parse_from_the_environment(monkeypatch):
    monkeypatch.setenv("MODELGATE_CORS_ORIGINS", "https://a.example, http://[::1]:8080,http://localhost:3000")
    assert Settings(_env_file=None).cors_origins == ["https://a.example", "http://[::1]:8080", "http://localhost:3000"]
    monkeypatch.setenv("MODELGATE_CORS_ORIGINS", "")
    assert Settings(_env_file=None).cors_origins == []
