"""POST /v1/completions in-process against FakeBackend's chat model (tests/api/fake_llm.py)."""

from __future__ import annotations

import pytest

from tests.api.conftest import assert_error
from tests.api.fake_llm import FakeLLM, sse_events

URL = "/v1/completions"


def words(prompt: str, count: int = 5, choice: int = 0) -> str:
    return "".join(FakeLLM.words(prompt, choice, None, False, count))


async def test_plain_completion_has_openai_shape_and_exact_usage(client, backend):
    r = await client.post(URL, json={"model": "llm", "prompt": "once upon a time"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion" and body["model"] == "llm"
    assert isinstance(body["created"], int) and body["system_fingerprint"] is None
    assert body["choices"] == [{"index": 0, "text": words("once upon a time"), "logprobs": None,
                                "finish_reason": "stop"}]
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
    assert backend.llm.prompts == ["once upon a time"]  # no template: the prompt as given


async def test_max_tokens_defaults_to_the_rest_of_the_context_not_16(client, backend):
    body = (await client.post(URL, json={"model": "llm", "prompt": "a b", "ignore_eos": True})).json()
    assert "max_tokens" not in backend.llm.params[0]
    assert body["usage"]["completion_tokens"] == 62 and body["choices"][0]["finish_reason"] == "length"


async def test_prompt_list_gives_choice_groups_in_order(client):
    prompts = ["first prompt", "second one here"]
    body = (await client.post(URL, json={"model": "llm", "prompt": prompts, "n": 2, "max_tokens": 3,
                                         "ignore_eos": True})).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert [c["text"] for c in body["choices"]] == [words(p, 3, j) for p in prompts for j in range(2)]
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 12, "total_tokens": 17}


async def test_echo_prepends_the_prompt(client):
    body = (await client.post(URL, json={"model": "llm", "prompt": "say it", "echo": True, "max_tokens": 2,
                                         "ignore_eos": True})).json()
    assert body["choices"][0]["text"] == "say it" + words("say it", 2)
    assert body["usage"]["completion_tokens"] == 2


async def test_stop_string(client, backend):
    full = words("go")
    stop = full.split()[1]
    body = (await client.post(URL, json={"model": "llm", "prompt": "go", "stop": stop})).json()
    assert backend.llm.params[0]["stop"] == stop
    assert body["choices"][0] == {"index": 0, "text": full[:full.index(" " + stop)], "logprobs": None,
                                  "finish_reason": "stop"}


async def test_logprobs_in_the_legacy_shape(client, backend):
    body = (await client.post(URL, json={"model": "llm", "prompt": "hi", "logprobs": 3, "max_tokens": 3,
                                         "ignore_eos": True})).json()
    assert backend.llm.params[0]["logprobs"] == 3
    logprobs = body["choices"][0]["logprobs"]
    tokens = FakeLLM.words("hi", 0, None, False, 3)
    assert logprobs["tokens"] == tokens and "".join(tokens) == body["choices"][0]["text"]
    assert logprobs["text_offset"] == [0, len(tokens[0]), len(tokens[0]) + len(tokens[1])]
    assert all(lp < 0 for lp in logprobs["token_logprobs"])
    assert all(len(top) == 3 and tok in top for top, tok in zip(logprobs["top_logprobs"], tokens))


async def test_streaming_matches_plain_and_ends_with_done(client):
    plain = (await client.post(URL, json={"model": "llm", "prompt": "tell me"})).json()["choices"][0]["text"]
    r = await client.post(URL, json={"model": "llm", "prompt": "tell me", "stream": True,
                                     "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert all(e["object"] == "text_completion" and e["id"].startswith("cmpl-") for e in events)
    chunks, usage = events[:-1], events[-1]
    assert "".join(e["choices"][0]["text"] for e in chunks) == plain
    assert [e["choices"][0]["finish_reason"] for e in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    assert all(e["usage"] is None for e in chunks)
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 2, "completion_tokens": 5,
                                                         "total_tokens": 7}


async def test_streaming_several_prompts_with_echo(client):
    r = await client.post(URL, json={"model": "llm", "prompt": ["p one", "p two"], "max_tokens": 2,
                                     "stream": True, "logprobs": 1, "ignore_eos": True})
    texts: dict[int, str] = {}
    for event in sse_events(r.text):
        choice = event["choices"][0]
        texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
        assert choice["logprobs"]["tokens"] == ([choice["text"]] if choice["text"] else [])
    assert texts == {0: words("p one", 2), 1: words("p two", 2)}
    r = await client.post(URL, json={"model": "llm", "prompt": ["p one", "p two"], "echo": True, "max_tokens": 2,
                                     "stream": True, "ignore_eos": True})
    echoed: dict[int, str] = {}
    for event in sse_events(r.text):
        choice = event["choices"][0]
        echoed[choice["index"]] = echoed.get(choice["index"], "") + choice["text"]
    assert echoed == {0: "p one" + words("p one", 2), 1: "p two" + words("p two", 2)}


@pytest.mark.parametrize("stream", [False, True])
async def test_context_overflow_is_400_naming_prompt(client, stream):
    assert_error(await client.post(URL, json={"model": "llm", "prompt": ["ok", "x " * 80], "stream": stream}), 400,
                 param="prompt", code="context_length_exceeded")


async def test_error_after_the_first_byte_is_an_event(client, backend):
    backend.llm.fail_after = 1
    events = sse_events((await client.post(URL, json={"model": "llm", "prompt": "a", "stream": True})).text)
    assert len(events) == 2 and events[-1]["error"]["type"] == "server_error"


@pytest.mark.parametrize("fields, param", [
    ({"suffix": "end"}, "suffix"), ({"best_of": 3}, "best_of"),
    ({"prompt": [1, 2, 3]}, "prompt"), ({"prompt": [[1, 2]]}, "prompt"), ({"prompt": []}, "prompt"),
    ({"echo": True, "logprobs": 1}, "echo"), ({"logprobs": 21}, "logprobs"), ({"top_p": 0}, "top_p"),
])
async def test_refused_by_name(client, fields, param):
    assert_error(await client.post(URL, json={"model": "llm", "prompt": "hi", **fields}), 400, param=param)


async def test_best_of_equal_to_n_is_plain_n(client):
    body = (await client.post(URL, json={"model": "llm", "prompt": "hi", "best_of": 2, "n": 2})).json()
    assert len(body["choices"]) == 2


async def test_embeddings_model_is_not_a_completions_model(client):
    assert_error(await client.post(URL, json={"model": "emb", "prompt": "hi"}), 400, code="model_task_mismatch")
