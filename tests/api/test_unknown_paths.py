"""A URL that names no endpoint gets OpenAI's 404 (`unknown_url`, in its words), a wrong method on an endpoint a
405 naming the methods; both in the envelope, echoing no query string and suggesting no admin path."""

from __future__ import annotations

import pytest

from tests.api.conftest import assert_error


async def test_unknown_url_is_openais_404(client):
    error = assert_error(await client.post("/v1/foo", json={}), 404, code="unknown_url")
    assert error["type"] == "invalid_request_error" and error["param"] is None
    assert error["message"].startswith("Unknown request URL: POST /v1/foo. Please check the URL for typos")
    assert "/docs" in error["message"] and "GET /v1/models" in error["message"]


@pytest.mark.parametrize(("method", "path", "meant"), [
    ("POST", "/chat/completions", "POST /v1/chat/completions"),  # base URL without /v1
    ("POST", "/v1/v1/embeddings", "POST /v1/embeddings"),  # /v1 twice
    ("GET", "/models", "GET /v1/models"),
    ("POST", "/v1/tokenize", "POST /tokenize"),  # vLLM's path has no /v1
])
async def test_a_base_url_mistake_is_named(client, method, path, meant):
    error = assert_error(await client.request(method, path), 404, code="unknown_url")
    assert f"Did you mean {meant}?" in error["message"]


@pytest.mark.parametrize("path", ["/v1/admin/models", "/v1/admin/models/load"])
async def test_admin_paths_are_never_suggested(client, path):
    error = assert_error(await client.get(path), 404, code="unknown_url")
    assert "admin" not in error["message"].split(". ", 1)[1]


async def test_the_query_string_is_not_echoed_and_long_paths_are_cut(client):
    error = assert_error(await client.get("/v1/nothing?api_key=sk-secret"), 404, code="unknown_url")
    assert "sk-secret" not in error["message"] and "?" not in error["message"]
    error = assert_error(await client.get("/v1/" + "x" * 5000), 404, code="unknown_url")
    assert len(error["message"]) < 600 and "/v1/" + "x" * 196 + "..." in error["message"]


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/v1/embeddings", "POST"),
    ("DELETE", "/v1/models", "GET"),
    ("PUT", "/tokenize", "POST"),
])
async def test_wrong_method_is_405_naming_the_methods(client, method, path, allowed):
    r = await client.request(method, path)
    error = assert_error(r, 405, code="method_not_allowed")
    assert error["message"] == f"Method not allowed: {method} {path}. This URL takes {allowed}."
    assert r.headers["allow"] == allowed


async def test_unknown_model_is_still_model_not_found(client):
    assert_error(await client.get("/v1/models/no-such-model"), 404, "model", "model_not_found")


async def test_allow_names_every_method_of_the_path(client):
    """GET and DELETE /v1/responses/{id} are two routes: a 405 names both (Starlette names the first only)."""
    r = await client.request("PUT", "/v1/responses/resp_1")
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET"
    assert "DELETE, GET" in r.json()["error"]["message"]
