import base64

import numpy as np
import pytest

from frontend.errors import ServiceUnavailable
from tests.api.conftest import DIM, assert_error, fake_vector


async def test_string_input_returns_one_vector_with_usage(client):
    r = await client.post("/v1/embeddings", json={"model": "emb", "input": "hello world"})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list" and body["model"] == "emb"
    assert body["data"][0]["object"] == "embedding" and body["data"][0]["index"] == 0
    np.testing.assert_allclose(body["data"][0]["embedding"], fake_vector("hello world"), rtol=1e-6)
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}


async def test_list_input_is_chunked_by_model_limit_and_keeps_order(client, backend):
    texts = ["a", "b c", "d", "e f g", "h"]
    r = await client.post("/v1/embeddings", json={"model": "emb", "input": texts})
    data = r.json()["data"]
    assert [d["index"] for d in data] == list(range(5))
    for text, item in zip(texts, data):
        np.testing.assert_allclose(item["embedding"], fake_vector(text), rtol=1e-6)
    assert [len(c[1]["text_input"]) for c in backend.calls] == [2, 2, 1]  # max_inputs_per_request=2
    assert r.json()["usage"]["prompt_tokens"] == sum(len(t.split()) + 2 for t in texts)


async def test_base64_encoding_decodes_to_the_float_vector(client):
    r = await client.post("/v1/embeddings", json={"model": "emb", "input": ["x"], "encoding_format": "base64"})
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    np.testing.assert_array_equal(np.frombuffer(raw, dtype="<f4"), fake_vector("x"))


async def test_dimensions_truncates_and_renormalises(client):
    r = await client.post("/v1/embeddings", json={"model": "emb", "input": "x", "dimensions": 3})
    vector = np.array(r.json()["data"][0]["embedding"])
    assert vector.shape == (3,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)
    expected = fake_vector("x")[:3]
    np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), rtol=1e-5)


async def test_dimensions_larger_than_model_is_400(client):
    assert_error(await client.post("/v1/embeddings", json={"model": "emb", "input": "x", "dimensions": DIM + 1}),
                 400, param="dimensions")


@pytest.mark.parametrize("tokens", [[1, 2, 3], [[1, 2, 3], [4, 5]]])
async def test_token_ids_go_to_the_encoder(client, backend, tokens):
    r = await client.post("/v1/embeddings", json={"model": "emb", "input": tokens})
    assert r.status_code == 200
    lists = tokens if isinstance(tokens[0], list) else [tokens]
    assert backend.calls[0][0] == "emb_encoder"
    for item, ids in zip(r.json()["data"], lists):
        np.testing.assert_allclose(item["embedding"], fake_vector(str(ids)), rtol=1e-6)
    assert r.json()["usage"]["prompt_tokens"] == sum(len(x) for x in lists)


async def test_token_ids_over_the_context_are_400(client):
    error = assert_error(await client.post("/v1/embeddings", json={"model": "emb", "input": list(range(17))}),
                         400, code="context_length_exceeded")
    assert "16" in error["message"]


@pytest.mark.parametrize("body, param", [
    ({"model": "emb"}, "input"),
    ({"input": "x"}, "model"),
    ({"model": "emb", "input": ""}, "input"),
    ({"model": "emb", "input": []}, "input"),
    ({"model": "emb", "input": [[]]}, "input"),
    ({"model": "emb", "input": [1, -2]}, "input.1"),
    ({"model": "emb", "input": [1, "a"]}, None),
    ({"model": "emb", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"model": "emb", "input": "x", "dimensions": 0}, "dimensions"),
])
async def test_invalid_bodies_are_400_envelopes(client, body, param):
    error = assert_error(await client.post("/v1/embeddings", json=body), 400, param=param)
    assert error["type"] == "invalid_request_error"


async def test_malformed_json_is_400(client):
    r = await client.post("/v1/embeddings", content=b'{"model": "emb", "input": ',
                          headers={"content-type": "application/json"})
    assert_error(r, 400, code="invalid_json")


async def test_too_many_inputs_is_400(client):
    assert_error(await client.post("/v1/embeddings", json={"model": "emb", "input": ["a"] * 6}), 400, param="input")


async def test_unknown_model_is_404_and_wrong_task_is_400(client):
    assert_error(await client.post("/v1/embeddings", json={"model": "nope", "input": "x"}), 404,
                 param="model", code="model_not_found")
    assert_error(await client.post("/v1/embeddings", json={"model": "llm", "input": "x"}), 400,
                 code="model_task_mismatch")


async def test_unknown_fields_are_accepted(client, caplog):
    r = await client.post("/v1/embeddings", json={"model": "emb", "input": "x", "user": "u", "future_field": 1})
    assert r.status_code == 200
    assert "future_field" in caplog.text


async def test_triton_unavailable_is_503(client, backend):
    await client.post("/v1/embeddings", json={"model": "emb", "input": "x"})  # registry knows the model
    backend.fail = ServiceUnavailable("Triton at x is unreachable")
    assert_error(await client.post("/v1/embeddings", json={"model": "emb", "input": "x"}), 503)


async def test_body_over_the_limit_is_413(client):
    big = {"model": "emb", "input": "x" * 5000}
    assert_error(await client.post("/v1/embeddings", json=big), 413, code="request_too_large")


async def test_chunked_body_over_the_limit_is_413(client):
    async def chunks():
        yield b'{"model": "emb", "input": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    r = await client.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    assert_error(r, 413)


@pytest.mark.parametrize("ids", [[1, 1000], [[5], [2**63]], [2**64 - 1]])
async def test_token_ids_outside_the_vocabulary_are_400_naming_input(client, backend, ids):
    """LangChain's OpenAIEmbeddings sends tiktoken ids by default: the message says how to send text."""
    error = assert_error(await client.post("/v1/embeddings", json={"model": "emb", "input": ids}), 400,
                         param="input", code="invalid_token_ids")
    assert "check_embedding_ctx_length=False" in error["message"] and "1000 tokens" in error["message"]
    assert not backend.calls


async def test_the_last_id_of_the_vocabulary_is_accepted(client):
    assert (await client.post("/v1/embeddings", json={"model": "emb", "input": [0, 999]})).status_code == 200


async def test_ids_are_bounded_even_when_the_model_publishes_no_vocabulary(client, backend):
    del backend.models["emb"]["vocab_size"]
    error = assert_error(await client.post("/v1/embeddings", json={"model": "emb", "input": [2**63]}), 400,
                         param="input")
    assert "check_embedding_ctx_length=False" in error["message"]


@pytest.mark.parametrize("truncate", [16, -1])
async def test_truncate_prompt_tokens_keeps_the_last_token_ids(client, backend, truncate):
    body = {"model": "emb", "input": list(range(40)), "truncate_prompt_tokens": truncate}
    r = await client.post("/v1/embeddings", json=body)
    assert r.status_code == 200, r.text
    sent = backend.calls[-1][1]
    assert sent["input_ids"][0].tolist() == list(range(24, 40))
    assert r.json()["usage"]["prompt_tokens"] == 16


async def test_truncate_prompt_tokens_asks_the_tokenizer_model_for_text(client, backend):
    text = " ".join(f"w{i}" for i in range(30))
    body = {"model": "emb", "input": [text, "short"], "truncate_prompt_tokens": 5}
    r = await client.post("/v1/embeddings", json=body)
    assert r.status_code == 200, r.text
    assert backend.calls[-1][1]["truncate_prompt_tokens"].tolist() == [5]
    assert r.json()["usage"]["prompt_tokens"] == 5 + 3


async def test_without_truncation_a_long_text_is_400_saying_how_to_truncate(client, backend):
    text = " ".join(f"w{i}" for i in range(30))
    error = assert_error(await client.post("/v1/embeddings", json={"model": "emb", "input": text}), 400,
                         code="context_length_exceeded")
    assert "truncate_prompt_tokens" in error["message"]
    assert "truncate_prompt_tokens" not in backend.calls[-1][1]


@pytest.mark.parametrize("truncate", [0, 17, -2, "5"])
async def test_truncate_prompt_tokens_out_of_range_is_400(client, truncate):
    body = {"model": "emb", "input": "x", "truncate_prompt_tokens": truncate}
    assert_error(await client.post("/v1/embeddings", json=body), 400, param="truncate_prompt_tokens")


async def test_a_model_whose_tokenizer_cannot_truncate_says_so(client, backend):
    del backend.models["emb"]["truncation_side"]
    body = {"model": "emb", "input": "x", "truncate_prompt_tokens": 4}
    assert_error(await client.post("/v1/embeddings", json=body), 400, param="truncate_prompt_tokens",
                 code="unsupported_parameter")
    body["input"] = [1, 2, 3, 4, 5]  # token ids: the frontend cuts them itself
    assert (await client.post("/v1/embeddings", json=body)).status_code == 200
