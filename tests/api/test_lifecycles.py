"""Structured request lifecycles in-process: a list of prompts lives and dies together, is bounded, and each
prompt counts against the rate limits."""

from __future__ import annotations

import pytest

from frontend.settings import Settings
from tests.api.conftest import assert_error

URL = "/v1/completions"
LONG = " ".join(["word"] * 80)  # over the fake model's 64-token context


@pytest.mark.parametrize("stream", [False, True])
async def test_the_first_failing_prompt_cancels_the_others(client, backend, stream):
    backend.llm.delay_s = 0.2  # the good prompts are still running when the bad one fails
    r = await client.post(URL, json={"model": "llm", "prompt": ["a", "b", LONG], "max_tokens": 3,
                                     "stream": stream}, headers={"Authorization": "Bearer sk-team"})
    assert_error(r, 400, param="prompt", code="context_length_exceeded")
    assert backend.llm.closed_early == 2  # both good generations were stopped, not left to run unread


@pytest.fixture
def settings() -> Settings:
    return Settings(model_index_ttl_s=0, completions_max_prompts=3, api_keys="team=sk-team",
                    default_requests_per_minute=4, cache_enabled=False)


async def test_prompts_per_request_are_capped(client, backend):
    r = await client.post(URL, json={"model": "llm", "prompt": ["a"] * 4, "max_tokens": 1},
                          headers={"Authorization": "Bearer sk-team"})
    error = assert_error(r, 400, param="prompt")
    assert "at most 3 prompts" in error["message"] and not backend.llm.prompts


async def test_each_prompt_counts_as_a_request_for_the_rate_limits(client):
    headers = {"Authorization": "Bearer sk-team"}
    r = await client.post(URL, json={"model": "llm", "prompt": ["a", "b", "c"], "max_tokens": 1}, headers=headers)
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining-requests"] == "1"
    r = await client.post(URL, json={"model": "llm", "prompt": ["a", "b"], "max_tokens": 1}, headers=headers)
    error = assert_error(r, 429, code="rate_limit_exceeded")
    assert "2 prompts" in error["message"]
    assert (await client.post(URL, json={"model": "llm", "prompt": "a", "max_tokens": 1},
                              headers=headers)).status_code == 200  # the refused pair took nothing


async def test_over_the_prompt_cap_is_refused_before_it_costs_the_key(client):
    headers = {"Authorization": "Bearer sk-team"}
    for _ in range(3):  # a request that can never be served takes nothing from the key's budget
        r = await client.post(URL, json={"model": "llm", "prompt": ["a"] * 9, "max_tokens": 1}, headers=headers)
        assert_error(r, 400, param="prompt")
    r = await client.post(URL, json={"model": "llm", "prompt": "a", "max_tokens": 1}, headers=headers)
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining-requests"] == "3"


async def test_more_prompts_than_the_key_may_ever_send_is_a_400_not_a_429(backend):
    import httpx

    from frontend.app import create_app

    app = create_app(Settings(model_index_ttl_s=0, completions_max_prompts=32, api_keys="team=sk-team",
                              default_requests_per_minute=4, cache_enabled=False), backend=backend)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        r = await client.post(URL, json={"model": "llm", "prompt": ["a"] * 5, "max_tokens": 1},
                              headers={"Authorization": "Bearer sk-team"})
        error = assert_error(r, 400, param="prompt")
        assert "counts as 5 requests" in error["message"] and "retry-after" not in r.headers
