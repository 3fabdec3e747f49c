"""/v1/rerank and /v1/score in-process: a fake cross-encoder `rr` beside FakeBackend's embeddings model `emb`."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from frontend.app import create_app
from frontend.settings import Settings
from tests.api.conftest import FakeBackend, assert_error, fake_vector

QUERY = "capital of france"
DOCS = ["paris is the capital of france", "pandas eat bamboo", "the capital city", "france"]


def overlap(query: str, document: str) -> float:
    """The fake cross-encoder's score: the share of the document's words that are in the query."""
    words = document.split()
    return sum(w in query.split() for w in words) / max(len(words), 1)


def pair_tokens(query: str, document: str) -> int:
    return len(query.split()) + len(document.split()) + 3  # [CLS] query [SEP] document [SEP]


class RerankBackend(FakeBackend):
    """FakeBackend plus `rr`, a cross-encoder ensemble (text_input, text_pair -> score, num_input_tokens)."""

    def __init__(self):
        super().__init__()
        self.models["rr"] = {"openai_task": "rerank", "max_input_tokens": "32", "max_inputs_per_request": "2"}
        self.configs["rr"] = {"platform": "ensemble"}
        self.states["rr"] = "READY"

    async def infer(self, model, inputs, outputs, request_id=""):
        if model != "rr":
            return await super().infer(model, inputs, outputs, request_id)
        self.calls.append((model, inputs))
        pairs = [(q.decode(), d.decode()) for q, d in zip(inputs["text_input"], inputs["text_pair"], strict=True)]
        return {"score": np.array([[overlap(q, d)] for q, d in pairs], dtype=np.float32),
                "num_input_tokens": np.array([pair_tokens(q, d) for q, d in pairs], dtype=np.int32)}


@pytest.fixture
def backend() -> RerankBackend:
    return RerankBackend()


@pytest.fixture
def settings() -> Settings:
    return Settings(model_index_ttl_s=0, rerank_max_documents=5)


def cosine(a: str, b: str) -> float:
    u, v = fake_vector(a).astype(np.float64), fake_vector(b).astype(np.float64)
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


async def test_cross_encoder_ranks_every_document_with_usage(client, backend):
    r = await client.post("/v1/rerank", json={"model": "rr", "query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "rr" and body["id"].startswith("rerank-")
    expected = sorted(range(len(DOCS)), key=lambda i: -overlap(QUERY, DOCS[i]))
    assert [x["index"] for x in body["results"]] == expected == [3, 0, 2, 1]
    for result in body["results"]:
        assert result["relevance_score"] == pytest.approx(overlap(QUERY, DOCS[result["index"]]), abs=1e-6)
        assert result["document"] == {"text": DOCS[result["index"]]}
    tokens = sum(pair_tokens(QUERY, d) for d in DOCS)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    # Pairs in calls of the model's max_inputs_per_request (2), the query beside each document.
    calls = [inputs for model, inputs in backend.calls if model == "rr"]
    assert [len(c["text_pair"]) for c in calls] == [2, 2]
    assert {q.decode() for c in calls for q in c["text_input"]} == {QUERY}


@pytest.mark.parametrize("top_n, count", [(1, 1), (3, 3), (99, 4)])
async def test_top_n_keeps_the_best(client, top_n, count):
    r = await client.post("/v1/rerank", json={"model": "rr", "query": QUERY, "documents": DOCS, "top_n": top_n})
    assert [x["index"] for x in r.json()["results"]] == [3, 0, 2, 1][:count]


async def test_documents_as_objects_and_without_documents_in_the_answer(client):
    objects = [{"text": d} for d in DOCS]
    as_text = (await client.post("/v1/rerank", json={"model": "rr", "query": QUERY, "documents": DOCS})).json()
    r = await client.post("/v1/rerank", json={"model": "rr", "query": QUERY, "documents": objects,
                                              "return_documents": False})
    assert [x["index"] for x in r.json()["results"]] == [x["index"] for x in as_text["results"]]
    assert all(set(x) == {"index", "relevance_score"} for x in r.json()["results"])


async def test_embeddings_model_ranks_by_cosine_and_counts_each_text_once(client, backend):
    r = await client.post("/v1/rerank", json={"model": "emb", "query": "q w", "documents": ["a", "b c", "d"]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    expected = {i: cosine("q w", d) for i, d in enumerate(["a", "b c", "d"])}
    assert [x["index"] for x in results] == sorted(expected, key=lambda i: -expected[i])
    for x in results:
        assert x["relevance_score"] == pytest.approx(expected[x["index"]], abs=1e-6)
    # FakeBackend's emb: words + 2 per text; the query once, each document once.
    assert r.json()["usage"]["prompt_tokens"] == 4 + 3 + 4 + 3
    embedded = [t.decode() for model, inputs in backend.calls if model == "emb" for t in inputs["text_input"]]
    assert sorted(embedded) == sorted(["q w", "a", "b c", "d"])


@pytest.mark.parametrize("text_1, text_2, pairs", [
    ("a", "b", [("a", "b")]),
    (["a"], ["b"], [("a", "b")]),
    ("a", ["b", "c d", "e"], [("a", "b"), ("a", "c d"), ("a", "e")]),
    (["a", "x"], ["b", "c d"], [("a", "b"), ("x", "c d")]),
])
@pytest.mark.parametrize("model", ["emb", "rr"])
async def test_score_pairs_one_to_one_one_to_many_and_many_to_many(client, model, text_1, text_2, pairs):
    r = await client.post("/v1/score", json={"model": model, "text_1": text_1, "text_2": text_2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == model and body["id"].startswith("score-")
    assert isinstance(body["created"], int)
    assert [(d["index"], d["object"]) for d in body["data"]] == [(i, "score") for i in range(len(pairs))]
    score = cosine if model == "emb" else overlap
    assert [d["score"] for d in body["data"]] == pytest.approx([score(a, b) for a, b in pairs], abs=1e-6)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("path", ["/rerank", "/v2/rerank"])
async def test_rerank_aliases(client, path):
    r = await client.post(path, json={"model": "rr", "query": QUERY, "documents": DOCS, "top_n": 1})
    assert r.status_code == 200 and r.json()["results"][0]["index"] == 3


async def test_score_alias(client):
    r = await client.post("/score", json={"model": "rr", "text_1": QUERY, "text_2": DOCS[0]})
    assert r.json()["data"][0]["score"] == pytest.approx(overlap(QUERY, DOCS[0]))


@pytest.mark.parametrize("body, status, param, code", [
    ({"model": "llm", "query": "q", "documents": ["d"]}, 400, "model", "model_task_mismatch"),
    ({"model": "nope", "query": "q", "documents": ["d"]}, 404, "model", "model_not_found"),
    ({"model": "rr", "query": "q", "documents": []}, 400, "documents", None),
    ({"model": "rr", "query": "q", "documents": ["d"] * 6}, 400, "documents", None),
    ({"model": "rr", "query": "  ", "documents": ["d"]}, 400, "query", None),
    ({"model": "rr", "query": "q", "documents": ["d"], "top_n": 0}, 400, "top_n", None),
    ({"model": "rr", "query": "q", "documents": ["d"], "top_n": "1"}, 400, "top_n", None),
    ({"model": "rr", "query": "q", "documents": [{"image": "x.png"}]}, 400, "documents.0.image", None),
    ({"model": "rr", "query": "q", "documents": [7]}, 400, None, None),
    ({"model": "rr", "documents": ["d"]}, 400, "query", None),
    ({"model": "rr", "query": "q", "documents": ["d"], "max_tokens_per_doc": 9}, 400, "max_tokens_per_doc",
     "unsupported_parameter"),
    ({"model": "rr", "query": "q", "documents": ["d"], "truncate_prompt_tokens": 8}, 400, "truncate_prompt_tokens",
     "unsupported_parameter"),
])
async def test_bad_rerank_requests_are_400_naming_the_field(client, backend, body, status, param, code):
    assert_error(await client.post("/v1/rerank", json=body), status, param=param, code=code)
    assert not [call for call in backend.calls if call[0] in ("rr", "emb")]


@pytest.mark.parametrize("body, param", [
    ({"model": "rr", "text_1": ["a", "b"], "text_2": ["c", "d", "e"]}, "text_2"),
    ({"model": "rr", "text_1": ["a", "b"], "text_2": "c"}, "text_2"),
    ({"model": "rr", "text_1": [], "text_2": "c"}, "text_1"),
    ({"model": "rr", "text_1": "a", "text_2": []}, "text_2"),
    ({"model": "rr", "text_1": "a", "text_2": ["c"] * 6}, "text_2"),
    ({"model": "llm", "text_1": "a", "text_2": "b"}, "model"),
])
async def test_bad_score_requests_are_400_naming_the_field(client, body, param):
    assert_error(await client.post("/v1/score", json=body), 400, param=param)


async def test_embeddings_model_context_is_a_400_unless_truncation_is_asked_for(client):
    long = " ".join(["w"] * 20)  # 22 tokens for FakeBackend's emb, whose context is 16
    r = await client.post("/v1/rerank", json={"model": "emb", "query": "q", "documents": ["a", long]})
    assert "truncate_prompt_tokens" in assert_error(r, 400, param="documents", code="context_length_exceeded")["message"]
    r = await client.post("/v1/score", json={"model": "emb", "text_1": long, "text_2": "a"})
    assert_error(r, 400, param="text_1", code="context_length_exceeded")
    r = await client.post("/v1/rerank", json={"model": "emb", "query": "q", "documents": ["a", long],
                                              "truncate_prompt_tokens": -1})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 3 + 3 + 16


async def test_repeats_come_from_the_response_cache_and_tokens_are_metered(client, backend):
    body = {"model": "rr", "query": QUERY, "documents": DOCS[:2]}
    first = await client.post("/v1/rerank", json=body)
    calls = len(backend.calls)
    again = await client.post("/v1/rerank", json=body)
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")
    assert again.content == first.content and len(backend.calls) == calls
    metrics = (await client.get("/metrics")).text
    tokens = sum(pair_tokens(QUERY, d) for d in DOCS[:2])
    assert f'modelgate_prompt_tokens_total{{model="rr"}} {float(tokens)}' in metrics  # the miss only


async def test_tokens_are_charged_to_the_key_as_embeddings_are(backend):
    settings = Settings(model_index_ttl_s=0, api_keys="tiny=sk-tiny", default_tokens_per_minute=20,
                        cache_enabled=False)
    app = create_app(settings, backend=backend)
    key = {"Authorization": "Bearer sk-tiny"}
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        body = {"model": "rr", "query": "q", "documents": ["a b", "c"]}  # 6 + 5 tokens
        assert (await c.post("/v1/score", json={"model": "rr", "text_1": "q", "text_2": "d"}, headers=key)) \
            .headers["x-ratelimit-remaining-tokens"] == "20"
        assert (await c.post("/v1/rerank", json=body, headers=key)).headers["x-ratelimit-remaining-tokens"] == "15"
        assert (await c.post("/v1/rerank", json=body, headers=key)).headers["x-ratelimit-remaining-tokens"] == "4"
        assert_error(await c.post("/v1/rerank", json=body, headers=key), 429, code="rate_limit_exceeded")


async def test_openapi_publishes_both_operations_and_hides_the_aliases(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/v1/rerank", "/v1/score"):
        assert {"400", "404", "429"} <= set(paths[path]["post"]["responses"])
    assert not {"/rerank", "/v2/rerank", "/score"} & set(paths)
