"""Whatever a client sends, a 4xx envelope naming the field (issue 12, part 3): strict types, unpaired
surrogates, empty prompts, the chat engine's limits, and readable validation messages."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import assert_error
from triton_models.contract import MAX_LOGPROBS, MAX_N, MAX_STOP_SEQUENCES

CHAT = {"model": "llm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
COMPLETION = {"model": "llm", "prompt": "hi", "max_tokens": 2}
EMBEDDING = {"model": "emb", "input": "hi"}
IMAGE = {"model": "sd", "prompt": "a cat"}


def raw(body: dict, **replace: str) -> bytes:
    """`body` as JSON with some values given as raw JSON text (a lone surrogate cannot be built in Python)."""
    text = json.dumps({**body, **{key: f"@{key}@" for key in replace}})
    for key, value in replace.items():
        text = text.replace(f'"@{key}@"', value)
    return text.encode()


async def post_raw(client, path: str, content: bytes):
    return await client.post(path, content=content, headers={"content-type": "application/json"})


@pytest.mark.parametrize("path, body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
async def test_n_beyond_the_engine_limit_is_400_naming_n(client, backend, path, body):
    error = assert_error(await client.post(path, json={**body, "n": MAX_N + 1}), 400, param="n")
    assert str(MAX_N) in error["message"]
    assert not backend.calls  # refused before the call


@pytest.mark.parametrize("path, body, param, value", [
    ("/v1/chat/completions", {**CHAT, "logprobs": True}, "top_logprobs", MAX_LOGPROBS + 1),
    ("/v1/completions", COMPLETION, "logprobs", MAX_LOGPROBS + 1),
    ("/v1/completions", COMPLETION, "stop", ["x"] * (MAX_STOP_SEQUENCES + 1)),
])
async def test_other_engine_limits_are_400_naming_the_field(client, path, body, param, value):
    assert_error(await client.post(path, json={**body, param: value}), 400, param=param)


@pytest.mark.parametrize("prompt, param", [("", "prompt"), (["a", ""], "prompt.1")])
async def test_empty_prompts_are_400(client, backend, prompt, param):
    error = assert_error(await client.post("/v1/completions", json={**COMPLETION, "prompt": prompt}), 400, param=param)
    assert "empty" in error["message"]
    assert not backend.calls


@pytest.mark.parametrize("path, body, field", [
    ("/v1/chat/completions", CHAT, "stream"),
    ("/v1/chat/completions", CHAT, "ignore_eos"),
    ("/v1/chat/completions", CHAT, "n"),
    ("/v1/completions", COMPLETION, "echo"),
    ("/v1/completions", COMPLETION, "max_tokens"),
    ("/v1/embeddings", EMBEDDING, "dimensions"),
    ("/v1/images/generations", IMAGE, "n"),
])
@pytest.mark.parametrize("value", ["yes", "1", "true"])
async def test_strings_are_never_coerced(client, path, body, field, value):
    assert_error(await client.post(path, json={**body, field: value}), 400, param=field)


async def test_nested_fields_are_strict_too(client):
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": "yes"}}
    assert_error(await client.post("/v1/chat/completions", json=body), 400, param="stream_options.include_usage")


async def test_numbers_accept_integers(client):
    """JSON clients send `temperature: 1`; strictness must not refuse an integer where a number goes."""
    body = {**CHAT, "temperature": 1, "top_p": 1, "presence_penalty": 0}
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200


@pytest.mark.parametrize("path, body, field, value, param", [
    ("/v1/chat/completions", CHAT, "messages", '[{"role": "user", "content": "a\\ud800"}]', "messages.0.content"),
    ("/v1/chat/completions", CHAT, "stop", '["\\udfff"]', "stop.0"),
    ("/v1/completions", COMPLETION, "prompt", '["ok", "\\ud800"]', "prompt.1"),
    ("/v1/embeddings", EMBEDDING, "input", '"\\ud800x"', "input"),
    ("/v1/embeddings", EMBEDDING, "model", '"emb\\ud800"', "model"),
    ("/v1/images/generations", IMAGE, "prompt", '"a \\ud83d cat"', "prompt"),
    ("/v1/embeddings", EMBEDDING, "extra", '{"k\\ud800": 1}', "extra"),  # in a key: named where it is
])
async def test_unpaired_surrogates_are_400_naming_the_field(client, backend, path, body, field, value, param):
    error = assert_error(await post_raw(client, path, raw(body, **{field: value})), 400, param=param)
    assert "surrogate" in error["message"]
    assert not backend.calls


async def test_a_paired_surrogate_is_ordinary_text(client):
    r = await post_raw(client, "/v1/embeddings", raw(EMBEDDING, input='"\\ud83d\\ude00 smile"'))
    assert r.status_code == 200


@pytest.mark.parametrize("path, body, expected", [
    ("/v1/completions", {**COMPLETION, "prompt": 5},
     "prompt: has the wrong type; prompt must be one of: str, list[str]"),
    ("/v1/completions", {**COMPLETION, "prompt": ["a", 5]},
     "prompt.1: has the wrong type; prompt must be one of: str, list[str], list[int]"),
    ("/v1/embeddings", {**EMBEDDING, "input": [[1, -1]]}, "input.0.1: must be greater than or equal to 0"),
    ("/v1/embeddings", {**EMBEDDING, "encoding_format": "int8"}, "encoding_format: must be 'float' or 'base64'"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role: must be"),
    ("/v1/chat/completions", {"messages": CHAT["messages"]}, "model: Field required"),
])
async def test_validation_messages_name_the_field_in_plain_words(client, path, body, expected):
    error = assert_error(await client.post(path, json=body), 400)
    assert error["message"].startswith(expected)
    assert error["param"] == expected.split(":")[0]


async def test_an_unexpected_failure_is_500_and_closes_the_connection_explicitly(client, backend):
    """Uvicorn drops the connection after an unhandled error: a keep-alive client must be told, or its next
    request fails too."""
    backend.fail = RuntimeError("<_io.BytesIO object at 0x7f00>")
    r = await client.post("/v1/embeddings", json=EMBEDDING)
    error = assert_error(r, 500)
    assert r.headers["connection"] == "close"
    assert "BytesIO" not in error["message"]


async def test_a_client_error_keeps_the_connection(client):
    r = await post_raw(client, "/v1/embeddings", raw(EMBEDDING, input='"\\ud800"'))
    assert_error(r, 400)
    assert "connection" not in r.headers


async def test_a_request_without_a_body_says_so(client):
    r = await client.post("/v1/chat/completions")
    error = assert_error(r, 400, code="missing_body")
    assert "JSON object body" in error["message"]


async def test_a_deeply_nested_body_is_a_400_naming_where(client):
    body = '{"model": "emb", "input": "a", "x": ' + "[" * 200 + '"a"' + "]" * 200 + "}"
    r = await client.post("/v1/embeddings", content=body, headers={"Content-Type": "application/json"})
    error = assert_error(r, 400)
    assert "nested more than" in error["message"] and error["param"].startswith("x.0.0")
    assert (await client.post("/v1/embeddings", json={"model": "emb", "input": "a"})).status_code == 200


def test_the_body_walk_never_recurses():
    from frontend.protocol.common import MAX_DEPTH, TooDeep, surrogate_path

    deep: object = "a"
    for _ in range(5000):  # far past Python's recursion limit: a recursive walk raises RecursionError (a 500)
        deep = [deep]
    with pytest.raises(TooDeep) as info:
        surrogate_path({"x": deep})
    assert info.value.path == "x" + ".0" * (MAX_DEPTH - 1)
    assert surrogate_path({"x": [[["ok"]]], "y": ["\ud800"]}) == "y.0"  # document order, found past the first
