"""/metrics on the app in-process, parsed with prometheus_client's own parser; request ids in log records."""

from __future__ import annotations

import logging
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import assert_error


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scraped, name, **labels) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(client) -> dict:
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


async def test_requests_tokens_and_cache_are_counted_with_bounded_labels(client):
    for _ in range(2):
        assert (await client.post("/v1/embeddings", json={"model": "emb", "input": "a b"})).status_code == 200
    assert_error(await client.post("/v1/embeddings", json={"model": "made-up-42", "input": "x"}), 404)
    m = await scrape(client)
    assert value(m, "modelgate_requests_total", endpoint="/v1/embeddings", model="emb", status="200") == 2
    assert value(m, "modelgate_requests_total", endpoint="/v1/embeddings", model="unknown", status="404") == 1
    assert not any("made-up-42" in str(labels) for _, labels in m)  # request text never becomes a label
    assert value(m, "modelgate_request_duration_seconds_count", endpoint="/v1/embeddings", model="emb") == 2
    assert value(m, "modelgate_prompt_tokens_total", model="emb") == 4  # the miss only: a hit does no work
    assert value(m, "modelgate_cache_misses_total", endpoint="/v1/embeddings") == 1
    assert value(m, "modelgate_cache_hits_total", endpoint="/v1/embeddings") == 1
    assert value(m, "modelgate_cache_stores_total", endpoint="/v1/embeddings") == 1
    assert value(m, "modelgate_cache_bytes") > 0
    assert value(m, "modelgate_requests_in_flight") == 1  # the scrape itself
    assert value(m, "modelgate_triton_up") == 1


async def test_streams_give_time_to_first_token_and_inter_token_latency(client, backend):
    backend.llm.eos_after = 4
    body = {"model": "llm", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}}
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    m = await scrape(client)
    assert value(m, "modelgate_time_to_first_token_seconds_count", model="llm") == 1
    assert value(m, "modelgate_inter_token_latency_seconds_count", model="llm") == 3
    assert value(m, "modelgate_completion_tokens_total", model="llm") == 4
    assert value(m, "modelgate_prompt_tokens_total", model="llm") > 0


async def test_triton_down_and_unknown_paths(client, backend):
    backend.ready = False
    await client.get("/no/such/path")
    m = await scrape(client)
    assert value(m, "modelgate_triton_up") == 0
    assert value(m, "modelgate_requests_total", endpoint="other", model="none", status="404") == 1


async def test_admin_metrics_is_an_alias(client):
    r = await client.get("/admin/metrics")
    assert r.status_code == 200 and "modelgate_requests_total" in r.text


async def test_the_request_id_is_on_every_log_record_of_the_request(client, backend, caplog):
    caplog.set_level(logging.INFO)
    r = await client.post("/v1/images/generations", json={"prompt": "x"}, headers={"x-request-id": "req-123"})
    assert r.status_code == 404  # no images model in FakeBackend; the service logged nothing yet
    r = await client.post("/v1/embeddings", json={"model": "emb", "input": "x", "surprise": 1},
                          headers={"x-request-id": "req-456"})
    assert r.headers["x-request-id"] == "req-456"
    logged = [rec for rec in caplog.records if "surprise" in rec.getMessage()]  # the unknown-field warning
    assert logged and all(rec.request_id == "req-456" for rec in logged)
    outside = logging.getLogger("test").makeRecord("test", logging.INFO, __file__, 1, "x", (), None)
    assert outside.request_id == "-"


@pytest.mark.parametrize("given", ['modelgate-error:{"code":"overloaded"}', "a b", "x" * 129, "line\\nbreak"])
async def test_a_request_id_that_is_not_a_plain_token_is_replaced(client, given):
    r = await client.get("/v1/models", headers={"x-request-id": given})
    assert r.headers["x-request-id"] != given and re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    assert (await client.get("/v1/models", headers={"x-request-id": "req-7.a:b"})).headers["x-request-id"] == "req-7.a:b"
