"""Embeddings end to end: openai SDK -> frontend -> real Triton (tokenizer + ONNX encoder ensemble)."""

from __future__ import annotations

import base64
import re

import numpy as np
import openai
import pytest

from export_scripts.embeddings import load_sentence_transformer
from tests.stack import run_frontend
from frontend.settings import Settings
from launcher.triton import TritonServer

MODEL = "all-minilm-l6-v2"
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def reference():
    from export_scripts.embeddings import default_model_path

    return load_sentence_transformer(str(default_model_path()))


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("encoding_format", ["float", "base64", openai.NOT_GIVEN])
def test_embeddings_match_sentence_transformers(openai_client, reference, encoding_format):
    texts = ["hello", "world", "Triton serves this embedding through an ensemble."]
    result = openai_client.embeddings.create(model=MODEL, input=texts, encoding_format=encoding_format)
    vectors = [d.embedding for d in sorted(result.data, key=lambda d: d.index)]
    if encoding_format == "base64":  # asked for explicitly, the SDK hands the string over as is
        vectors = [np.frombuffer(base64.b64decode(v), dtype="<f4") for v in vectors]
    assert all(len(v) == 384 for v in vectors)
    assert cosines(vectors, reference.encode(texts)).min() >= MIN_COSINE
    expected_tokens = sum(len(reference.tokenizer(t)["input_ids"]) for t in texts)
    assert result.usage.prompt_tokens == result.usage.total_tokens == expected_tokens


def test_large_batch_is_split_and_ordered(openai_client, reference):
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'databases'}" for i in range(150)]
    result = openai_client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert [d.index for d in result.data] == list(range(150))
    assert cosines([d.embedding for d in result.data], reference.encode(texts)).min() >= MIN_COSINE


def test_token_ids_and_dimensions(openai_client, reference):
    ids = reference.tokenizer("hello world")["input_ids"]
    by_ids = openai_client.embeddings.create(model=MODEL, input=[ids], encoding_format="float").data[0].embedding
    by_text = openai_client.embeddings.create(model=MODEL, input="hello world", encoding_format="float")
    assert cosines([by_ids], [by_text.data[0].embedding])[0] >= MIN_COSINE
    short = openai_client.embeddings.create(model=MODEL, input="hello world", dimensions=64).data[0].embedding
    assert len(short) == 64 and np.linalg.norm(short) == pytest.approx(1.0, abs=1e-5)


def test_truncate_prompt_tokens_keeps_the_last_tokens_as_vllm_does(openai_client, reference):
    """LlamaIndex's 1024-token chunks on a 256-token model: opt in, and each input keeps its last tokens."""
    text = "word " * 400 + "and the end of the chunk"
    ids = reference.tokenizer(text)["input_ids"]  # [CLS] ... [SEP]
    kept = [ids[0], *ids[1:-1][-254:], ids[-1]]  # special tokens stay; the text is cut from the left
    truncated = openai_client.embeddings.create(model=MODEL, input=[text, "short"], encoding_format="float",
                                                extra_body={"truncate_prompt_tokens": -1})
    assert truncated.usage.prompt_tokens == 256 + len(reference.tokenizer("short")["input_ids"])
    by_ids = openai_client.embeddings.create(model=MODEL, input=[kept], encoding_format="float")
    assert cosines([truncated.data[0].embedding], [by_ids.data[0].embedding])[0] >= MIN_COSINE
    cut = openai_client.embeddings.create(model=MODEL, input=[ids], encoding_format="float",
                                          extra_body={"truncate_prompt_tokens": 10})
    last_ten = openai_client.embeddings.create(model=MODEL, input=[ids[-10:]], encoding_format="float")
    assert cosines([cut.data[0].embedding], [last_ten.data[0].embedding])[0] >= MIN_COSINE


def test_errors_are_openai_errors(openai_client):
    with pytest.raises(openai.NotFoundError) as not_found:
        openai_client.embeddings.create(model="no-such-model", input="x")
    assert not_found.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_long:
        openai_client.embeddings.create(model=MODEL, input="word " * 400)
    assert too_long.value.body["code"] == "context_length_exceeded"
    assert re.search(r"maximum context length is 256 tokens", too_long.value.body["message"])
    with pytest.raises(openai.BadRequestError):
        openai_client.embeddings.create(model=MODEL, input="x", dimensions=999)


def test_malformed_body_is_400_envelope(http):
    r = http.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_models_come_from_the_repository(openai_client):
    models = {m.id: m for m in openai_client.models.list()}
    assert MODEL in models and f"{MODEL}_encoder" not in models
    assert models[MODEL].task == "embeddings"
    assert openai_client.models.retrieve(MODEL).id == MODEL


def test_health(http):
    assert http.get("/health").status_code == 200
    ready = http.get("/health/ready")
    assert ready.status_code == 200 and MODEL in ready.json()["models"]


def test_triton_response_cache_serves_repeats(openai_client, triton):
    import httpx

    def hits() -> float:
        text = httpx.get(f"http://127.0.0.1:{triton.metrics_port}/metrics").text
        pattern = rf'nv_cache_num_hits_per_model{{model="{MODEL}_encoder",version="1"}} (\S+)'
        match = re.search(pattern, text)
        return float(match.group(1)) if match else 0.0

    text = "a sentence that only the cache test sends"
    no_store = {"Cache-Control": "no-store"}  # past the frontend's own cache, so Triton sees the repeat
    openai_client.embeddings.create(model=MODEL, input=[text], extra_headers=no_store)
    before = hits()
    openai_client.embeddings.create(model=MODEL, input=[text], extra_headers=no_store)
    assert hits() == before + 1


def test_stopped_triton_gives_503(repository):
    """A second Triton, stopped under a running frontend: requests and readiness turn into 503 envelopes."""
    server = TritonServer(repository, [MODEL]).start()
    try:
        with run_frontend(Settings(triton_grpc_url=server.grpc_url, model_index_ttl_s=0,
                                   request_timeout_s=10)) as fe:
            client = openai.OpenAI(base_url=fe.base_url, api_key="x", max_retries=0)
            assert len(client.embeddings.create(model=MODEL, input="up").data) == 1
            server.stop()
            with pytest.raises(openai.InternalServerError) as down:
                client.embeddings.create(model=MODEL, input="down")
            assert down.value.status_code == 503
            import httpx

            ready = httpx.get(f"{fe.url}/health/ready")
            assert ready.status_code == 503 and "error" in ready.json()
    finally:
        server.stop()
