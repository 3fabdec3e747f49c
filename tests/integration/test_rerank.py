"""Rerank and score end to end: httpx and Cohere's SDK -> frontend -> real Triton, over all-MiniLM-L6-v2
(cosine of its embeddings) and tiny-reranker-random (a cross-encoder: tokenizer model + ONNX scorer ensemble)."""

from __future__ import annotations

import numpy as np
import pytest

from export_scripts import rerank
from export_scripts.embeddings import default_model_path

MINILM = "all-minilm-l6-v2"
RERANKER = rerank.TINY_NAME
QUERY = "What is the capital of France?"
DOCS = [
    "The giant panda is a bear species endemic to China.",
    "Paris is the capital of France.",
    "Bananas are a good source of potassium.",
    "The stock market fell sharply on Monday.",
]
LONG = "a long document about nothing in particular " * 80  # over both models' context


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(default_model_path()))


@pytest.fixture(scope="module")
def cross_encoder():
    """transformers' sigmoid(logits) of tiny-reranker-random: the same weights the export wrote (fixed seed)."""
    import torch

    tokenizer, model = rerank.tiny_model()

    def scores(firsts: list[str], seconds: list[str]) -> tuple[np.ndarray, int]:
        batch = tokenizer(firsts, seconds, padding=True, truncation=True, max_length=512, return_tensors="pt")
        with torch.no_grad():
            return torch.sigmoid(model(**batch).logits).numpy().reshape(-1), int(batch["attention_mask"].sum())

    return scores


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_minilm_ranks_the_answer_first(http, minilm_tokenizer):
    r = http.post("/v1/rerank", json={"model": MINILM, "query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results[0]["index"] == 1 and results[0]["document"] == {"text": "Paris is the capital of France."}
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True) and scores[0] - scores[1] > 0.3
    assert sorted(x["index"] for x in results) == [0, 1, 2, 3]
    tokens = sum(len(minilm_tokenizer(t)["input_ids"]) for t in [QUERY, *DOCS])  # each text once
    assert r.json()["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_minilm_scores_are_the_cosines_of_its_embeddings(http, openai_client):
    vectors = [d.embedding for d in openai_client.embeddings.create(model=MINILM, input=[QUERY, *DOCS],
                                                                    encoding_format="float").data]
    expected = cosines([vectors[0]] * len(DOCS), vectors[1:])
    one_to_many = http.post("/v1/score", json={"model": MINILM, "text_1": QUERY, "text_2": DOCS}).json()
    assert [d["score"] for d in one_to_many["data"]] == pytest.approx(expected, abs=1e-6)
    many = http.post("/v1/score", json={"model": MINILM, "text_1": DOCS[:2], "text_2": DOCS[2:]}).json()
    assert [d["score"] for d in many["data"]] == pytest.approx(cosines(vectors[1:3], vectors[3:]), abs=1e-6)
    ranked = http.post("/rerank", json={"model": MINILM, "query": QUERY, "documents": DOCS, "top_n": 2}).json()
    assert [x["relevance_score"] for x in ranked["results"]] == pytest.approx(sorted(expected)[::-1][:2], abs=1e-6)


def test_minilm_truncates_only_when_asked(http):
    r = http.post("/v1/rerank", json={"model": MINILM, "query": QUERY, "documents": [DOCS[1], LONG]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "documents"
    assert r.json()["error"]["code"] == "context_length_exceeded"
    r = http.post("/v1/rerank", json={"model": MINILM, "query": QUERY, "documents": [DOCS[1], LONG],
                                      "truncate_prompt_tokens": -1})
    assert r.status_code == 200 and r.json()["results"][0]["index"] == 0


def test_cross_encoder_scores_are_transformers_sigmoid_logits(http, cross_encoder):
    documents = [*DOCS, LONG]  # the last pair is cut to 512 tokens, longest side first, in Triton
    expected, tokens = cross_encoder([QUERY] * len(documents), documents)
    r = http.post("/v1/rerank", json={"model": RERANKER, "query": QUERY, "documents": documents})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == np.argsort(-expected, kind="stable").tolist()
    by_index = {x["index"]: x["relevance_score"] for x in results}
    assert [by_index[i] for i in range(len(documents))] == pytest.approx(expected, abs=1e-5)
    assert r.json()["usage"]["prompt_tokens"] == tokens
    firsts, seconds = [QUERY, "hello", LONG], [DOCS[1], "world", LONG]  # both texts of the last pair are cut
    expected, tokens = cross_encoder(firsts, seconds)
    scored = http.post("/v1/score", json={"model": RERANKER, "text_1": firsts, "text_2": seconds}).json()
    assert [d["score"] for d in scored["data"]] == pytest.approx(expected, abs=1e-5)
    assert scored["usage"]["prompt_tokens"] == tokens


def test_cohere_sdk_v2_rerank(frontend, http):
    import cohere

    client = cohere.ClientV2(api_key="unused", base_url=frontend.url, timeout=120, max_retries=0)
    answer = client.rerank(model=MINILM, query=QUERY, documents=DOCS, top_n=2)
    ours = http.post("/v1/rerank", json={"model": MINILM, "query": QUERY, "documents": DOCS, "top_n": 2}).json()
    assert [(x.index, x.relevance_score) for x in answer.results] == \
        [(x["index"], x["relevance_score"]) for x in ours["results"]]
    assert answer.results[0].index == 1 and answer.id.startswith("rerank-")
    with pytest.raises(cohere.errors.BadRequestError) as refused:
        client.rerank(model="smollm2-135m-instruct", query=QUERY, documents=DOCS)
    assert refused.value.body["error"]["param"] == "model"


@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "tiny-sd-random"])
def test_models_of_other_tasks_are_400_naming_model(http, model):
    for path, body in (("/v1/rerank", {"query": QUERY, "documents": DOCS}), ("/v1/score", {"text_1": "a", "text_2": "b"})):
        r = http.post(path, json={"model": model, **body})
        assert r.status_code == 400 and r.json()["error"]["param"] == "model", r.text
        assert r.json()["error"]["code"] == "model_task_mismatch"
