"""POST /v1/chat/completions in-process against FakeBackend's chat model (tests/api/fake_llm.py)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from frontend.chat_template import compile_template
from frontend.errors import ModelNotReady
from tests.api.conftest import assert_error
from tests.api.fake_llm import CHAT_TEMPLATE, FakeLLM, sse_events

URL = "/v1/chat/completions"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]
PROMPT = "<s><|system|>Be brief.</s><|user|>hello there</s><|assistant|>"


def chat(**fields) -> dict:
    return {"model": "llm", "messages": MESSAGES, **fields}


def answer(prompt: str = PROMPT, count: int = 5, choice: int = 0) -> str:
    return "".join(FakeLLM.words(prompt, choice, None, False, count))


async def test_plain_completion_has_openai_shape_and_exact_usage(client, backend):
    r = await client.post(URL, json=chat())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and body["model"] == "llm" and body["system_fingerprint"] is None
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": answer(), "refusal": None},
                                "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"] == {"prompt_tokens": len(PROMPT.split()), "completion_tokens": 5,
                             "total_tokens": len(PROMPT.split()) + 5}
    assert backend.llm.prompts == [PROMPT]


async def test_prompt_is_the_models_template_rendered_like_transformers(client, backend):
    messages = [{"role": "developer", "content": "Rules."},
                {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "two"}]},
                {"role": "assistant", "content": "ok"}, {"role": "user", "content": "again", "name": "ann"}]
    assert (await client.post(URL, json={"model": "llm", "messages": messages})).status_code == 200
    expected = compile_template(CHAT_TEMPLATE).render(
        messages=[{"role": "system", "content": "Rules."}, {"role": "user", "content": "part one\ntwo"},
                  {"role": "assistant", "content": "ok"}, {"role": "user", "content": "again"}],
        add_generation_prompt=True, bos_token="<s>", eos_token="</s>")
    assert backend.llm.prompts == [expected]
    assert expected.startswith("<s><|system|>Rules.</s>") and expected.endswith("<|assistant|>")


async def test_max_tokens_defaults_to_the_rest_of_the_context(client, backend):
    r = await client.post(URL, json=chat(ignore_eos=True))
    assert "max_tokens" not in backend.llm.params[0]
    assert r.json()["usage"]["completion_tokens"] == 64 - len(PROMPT.split())
    assert r.json()["choices"][0]["finish_reason"] == "length"


async def test_max_completion_tokens_wins_over_max_tokens(client, backend):
    r = await client.post(URL, json=chat(max_tokens=9, max_completion_tokens=3, ignore_eos=True))
    assert backend.llm.params[0]["max_tokens"] == 3
    assert r.json()["usage"]["completion_tokens"] == 3 and r.json()["choices"][0]["finish_reason"] == "length"


async def test_sampling_fields_reach_triton_by_name(client, backend):
    fields = {"temperature": 0.5, "top_p": 0.9, "top_k": 40, "seed": 7, "stop": ["x", "y"],
              "presence_penalty": 0.1, "frequency_penalty": -0.2, "n": 2, "user": "u1", "max_tokens": 4}
    assert (await client.post(URL, json=chat(**fields))).status_code == 200
    (_, inputs), = [c for c in backend.calls if c[0] == "llm"]
    assert json.loads(inputs["sampling_parameters"][0]) == {
        "temperature": 0.5, "top_p": 0.9, "top_k": 40, "seed": 7, "stop": ["x", "y"], "presence_penalty": 0.1,
        "frequency_penalty": -0.2, "n": 2, "max_tokens": 4}
    assert inputs["exclude_input_in_output"][0] and inputs["return_num_output_tokens"][0]
    assert "return_logprobs" not in inputs and not inputs["stream"][0]


async def test_n_choices_and_usage_counts_every_choice(client):
    body = (await client.post(URL, json=chat(n=3, max_tokens=2, ignore_eos=True))).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert [c["message"]["content"] for c in body["choices"]] == [answer(count=2, choice=j) for j in range(3)]
    assert body["usage"]["completion_tokens"] == 6 and body["usage"]["prompt_tokens"] == len(PROMPT.split())


async def test_stop_ends_with_stop(client):
    full = answer()
    stop = full.split()[2]
    body = (await client.post(URL, json=chat(stop=stop))).json()
    assert body["choices"][0]["message"]["content"] == full[:full.index(" " + stop)]
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_logprobs_name_the_sampled_token_and_its_alternatives(client, backend):
    body = (await client.post(URL, json=chat(logprobs=True, top_logprobs=3, max_tokens=2, ignore_eos=True))).json()
    assert backend.llm.params[0]["logprobs"] == 3
    content = body["choices"][0]["logprobs"]["content"]
    words = answer(count=2).split(" ")[1:]
    assert [t["token"] for t in content] == [f" {w}" for w in words]  # rank 2 in the fake, not rank 1
    for token in content:
        assert token["bytes"] == list(token["token"].encode()) and token["logprob"] < 0
        assert len(token["top_logprobs"]) == 3 and token["top_logprobs"][1]["token"] == token["token"]
    plain = (await client.post(URL, json=chat(logprobs=True, max_tokens=1))).json()
    assert plain["choices"][0]["logprobs"]["content"][0]["top_logprobs"] == []


async def test_streaming_framing_role_deltas_finish_then_done(client):
    plain = (await client.post(URL, json=chat())).json()["choices"][0]["message"]["content"]
    r = await client.post(URL, json=chat(stream=True))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert all(e["object"] == "chat.completion.chunk" and e["id"] == events[0]["id"] for e in events)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == plain
    assert events[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])
    assert all("usage" not in e for e in events)


async def test_stream_include_usage_adds_a_last_usage_chunk(client):
    events = sse_events((await client.post(URL, json=chat(stream=True, n=2, max_tokens=3, ignore_eos=True,
                                                           stream_options={"include_usage": True}))).text)
    assert all(e["usage"] is None for e in events[:-1])
    assert events[-1]["choices"] == [] and events[-1]["usage"] == {
        "prompt_tokens": len(PROMPT.split()), "completion_tokens": 6, "total_tokens": len(PROMPT.split()) + 6}
    for j in range(2):
        mine = [e["choices"][0] for e in events[:-1] if e["choices"][0]["index"] == j]
        assert mine[0]["delta"]["role"] == "assistant" and mine[-1]["finish_reason"] == "length"
        assert "".join(c["delta"].get("content", "") for c in mine) == answer(count=3, choice=j)


async def test_stream_logprobs_per_delta(client):
    events = sse_events((await client.post(URL, json=chat(stream=True, logprobs=True, top_logprobs=2,
                                                           max_tokens=2, ignore_eos=True))).text)
    tokens = [t["token"] for e in events if e["choices"][0]["logprobs"] for t in e["choices"][0]["logprobs"]["content"]]
    assert "".join(tokens) == answer(count=2)


@pytest.mark.parametrize("stream", [False, True])
async def test_context_overflow_is_400_before_the_stream_starts(client, stream):
    long = [{"role": "user", "content": "word " * 70}]
    error = assert_error(await client.post(URL, json={"model": "llm", "messages": long, "stream": stream}), 400,
                         param="messages", code="context_length_exceeded")
    assert error["message"].startswith("this model's maximum context length is 64 tokens")


async def test_max_tokens_over_the_context_is_context_length_exceeded(client):
    assert_error(await client.post(URL, json=chat(max_tokens=1000)), 400, code="context_length_exceeded")


@pytest.mark.parametrize("stream", [False, True])
async def test_overloaded_engine_is_503(client, backend, stream):
    backend.llm.overloaded = True
    assert_error(await client.post(URL, json=chat(stream=stream)), 503, code="overloaded")


async def test_error_after_the_first_byte_is_an_event_then_done(client, backend):
    backend.llm.fail_after = 2
    r = await client.post(URL, json=chat(stream=True))
    assert r.status_code == 200
    events = sse_events(r.text)
    assert events[-1] == {"error": {"message": "generation failed for this request; please retry",
                                    "type": "server_error", "param": None, "code": "generation_failed"}}
    assert len(events) == 4  # role, two deltas, the error: no finish_reason chunk
    assert "".join(e["choices"][0]["delta"]["content"] for e in events[1:3]) == answer(count=2)


async def test_backend_failure_before_streaming_keeps_its_status(client, backend):
    await client.get("/v1/models")  # the registry knows the model; the call itself fails
    backend.fail = ModelNotReady("llm is unloading")
    assert_error(await client.post(URL, json=chat(stream=True)), 503)


@pytest.mark.parametrize("field, value", [
    ("functions", [{"name": "f"}]), ("function_call", "auto"), ("audio", {"voice": "alloy"}),
    ("modalities", ["text", "audio"]), ("prediction", {"type": "content", "content": "x"}),
])
async def test_unsupported_fields_are_refused_by_name(client, field, value):
    assert_error(await client.post(URL, json=chat(**{field: value})), 400, param=field, code="unsupported_parameter")


@pytest.mark.parametrize("field, value", [("response_format", {"type": "text"}), ("tools", []),
                                          ("tool_choice", "none"), ("logit_bias", {}), ("modalities", ["text"]),
                                          ("store", False), ("metadata", {"k": "v"})])
async def test_fields_that_ask_for_nothing_are_accepted(client, field, value):
    assert (await client.post(URL, json=chat(**{field: value}))).status_code == 200


@pytest.mark.parametrize("messages, param", [
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}],
     "messages[0].content[0].type"),
    ([{"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]}], "messages[0].tool_calls"),
    ([{"role": "assistant", "content": "x", "function_call": {"name": "f"}}], "messages[0].function_call"),
])
async def test_unsupported_message_content_is_refused_by_name(client, messages, param):
    assert_error(await client.post(URL, json={"model": "llm", "messages": messages}), 400, param=param)


@pytest.mark.parametrize("fields, param", [
    ({"messages": []}, "messages"), ({"temperature": 3}, "temperature"), ({"n": 0}, "n"),
    ({"top_logprobs": 2}, None), ({"stream_options": {"include_usage": True}}, None),
    ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"), ({"messages": [{"role": "robot", "content": "x"}]}, None),
])
async def test_invalid_requests_are_400(client, fields, param):
    error = assert_error(await client.post(URL, json={**chat(), **fields}), 400)
    if param:
        assert error["param"] == param


async def test_template_refusal_is_400_naming_messages(client):
    messages = [{"role": "user", "content": "a forbidden word"}]
    error = assert_error(await client.post(URL, json={"model": "llm", "messages": messages}), 400, param="messages")
    assert "That word is not allowed" in error["message"]


async def test_model_checks(client, backend):
    assert_error(await client.post(URL, json={**chat(), "model": "nope"}), 404, code="model_not_found")
    assert_error(await client.post(URL, json={**chat(), "model": "emb"}), 400, code="model_task_mismatch")


async def test_model_without_a_chat_template(client, backend):
    backend.models["llm"]["chat_template"] = ""
    assert_error(await client.post(URL, json=chat()), 400, code="chat_template_missing")
    assert (await client.post("/v1/completions", json={"model": "llm", "prompt": "hi"})).status_code == 200


async def call_then_leave(app, body: dict, leave: asyncio.Event) -> list[dict]:
    """One request straight through ASGI whose client disconnects once `leave` is set; the messages sent."""
    raw = json.dumps(body).encode()
    sent, requested = [], False

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            leave.set()  # gone after the first chunk

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": URL, "raw_path": URL.encode(), "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
             "client": ("test", 1), "server": ("test", 80), "root_path": ""}
    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    return sent


async def test_client_that_disconnects_mid_stream_cancels_the_generation(client, backend):
    backend.llm.delay_s = 0.05
    sent = await call_then_leave(client._transport.app, chat(stream=True, max_tokens=40, ignore_eos=True),
                                 asyncio.Event())
    chunks = [m for m in sent if m["type"] == "http.response.body" and m.get("body")]
    assert 1 <= len(chunks) < 10
    assert backend.llm.closed_early == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_client_that_leaves_before_the_first_token_cancels_the_generation(client, backend, stream):
    backend.llm.delay_s = 30  # queued behind others, say: nothing comes back for a long time
    leave = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, leave.set)
    await call_then_leave(client._transport.app, chat(stream=stream), leave)
    assert backend.llm.closed_early == 1


def salt_of(backend) -> str | None:
    (_, inputs), *_ = [c for c in reversed(backend.calls) if c[0] == "llm"]
    return json.loads(inputs["sampling_parameters"][0]).get("cache_salt")


async def test_each_api_key_gets_its_own_prefix_cache_salt(backend, tmp_path):
    from frontend.app import create_app
    from frontend.settings import Settings

    async def salts(scope: str) -> dict[str, str | None]:
        app = create_app(Settings(model_index_ttl_s=0, cache_enabled=False, prefix_cache_scope=scope,
                                  api_keys="alice=sk-alice,bob=sk-bob"), backend=backend)
        found = {}
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            for who in ("alice", "bob", "alice"):
                r = await client.post(URL, json=chat(), headers={"Authorization": f"Bearer sk-{who}"})
                assert r.status_code == 200
                assert found.setdefault(who, salt_of(backend)) == salt_of(backend)  # stable per key
            r = await client.post(URL, json=chat(cache_salt="doc-1"), headers={"Authorization": "Bearer sk-alice"})
            assert r.status_code == 200
            found["alice+doc-1"] = salt_of(backend)
        return found

    keyed = await salts("key")
    assert len(set(keyed.values())) == 3 and None not in keyed.values()
    assert all("alice" not in salt and "sk-" not in salt for salt in keyed.values())  # names and keys never leave
    shared = await salts("global")
    assert shared["alice"] is None and shared["bob"] is None and shared["alice+doc-1"] is not None


async def test_a_model_that_takes_no_salt_gets_none_and_refuses_one(client, backend):
    backend.configs["llm"] = {"backend": "vllm"}  # the vLLM backend's SamplingParams has no cache_salt
    assert (await client.post(URL, json=chat())).status_code == 200
    assert salt_of(backend) is None
    r = await client.post(URL, json=chat(cache_salt="x"))
    assert_error(r, 400, param="cache_salt", code="unsupported_parameter")


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.mark.parametrize("response_format, structured", [
    ({"type": "text"}, None),
    ({"type": "json_object"}, {"json_object": True}),
    ({"type": "json_schema", "json_schema": {"name": "a_1", "schema": SCHEMA, "strict": True}}, {"json": SCHEMA}),
    ({"type": "json_schema", "json_schema": {"name": "anything"}}, {"json": {}}),
])
async def test_response_format_becomes_the_engines_structured_outputs(client, backend, response_format, structured):
    assert (await client.post(URL, json=chat(response_format=response_format))).status_code == 200
    (_, inputs), *_ = [c for c in reversed(backend.calls) if c[0] == "llm"]
    assert json.loads(inputs["sampling_parameters"][0]).get("structured_outputs") == structured


@pytest.mark.parametrize("response_format", [
    {"type": "json_schema"}, {"type": "xml"}, {"type": "json_object", "json_schema": {"name": "x"}},
    {"type": "json_schema", "json_schema": {"name": "has space", "schema": {}}},
    {"type": "json_schema", "json_schema": {"schema": {}}},
])
async def test_a_malformed_response_format_is_a_400(client, response_format):
    r = await client.post(URL, json=chat(response_format=response_format))
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("response_format"), r.text


async def test_logit_bias_and_guided_extensions_reach_the_engine(client, backend):
    assert (await client.post(URL, json=chat(logit_bias={"50": 10, "7": -100}))).status_code == 200
    (_, inputs), *_ = [c for c in reversed(backend.calls) if c[0] == "llm"]
    assert json.loads(inputs["sampling_parameters"][0])["logit_bias"] == {"50": 10, "7": -100}
    for field, value, structured in (("guided_choice", ["a", "b"], {"choice": ["a", "b"]}),
                                     ("guided_regex", "[0-9]+", {"regex": "[0-9]+"}),
                                     ("guided_json", {"type": "integer"}, {"json": {"type": "integer"}}),
                                     ("guided_grammar", 'start: "x"', {"grammar": 'start: "x"'})):
        assert (await client.post(URL, json=chat(**{field: value}))).status_code == 200
        (_, inputs), *_ = [c for c in reversed(backend.calls) if c[0] == "llm"]
        assert json.loads(inputs["sampling_parameters"][0])["structured_outputs"] == structured


@pytest.mark.parametrize("fields, param", [
    ({"logit_bias": {"5": 101}}, "logit_bias"),
    ({"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias"),
    ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice"),
    ({"guided_regex": "a", "response_format": {"type": "json_object"}}, "response_format"),
    ({"guided_choice": []}, "guided_choice"),
])
async def test_conflicting_or_out_of_range_constraints_are_a_400(client, fields, param):
    r = await client.post(URL, json=chat(**fields))
    assert r.status_code == 400 and r.json()["error"]["param"].startswith(param), r.text


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


@pytest.mark.parametrize("choice, lark", [
    (None, "trigger[lazy]"), ("auto", "trigger[lazy]"), ("required", 'start: call ("\\n" call)*'),
    ({"type": "function", "function": {"name": "get_weather"}}, "start: call\ncall:"),  # exactly one call
])
async def test_tools_reach_the_prompt_and_the_engines_grammar(client, backend, choice, lark):
    fields = {"tools": [WEATHER]} | ({"tool_choice": choice} if choice else {})
    assert (await client.post(URL, json=chat(**fields))).status_code == 200
    (_, inputs), *_ = [c for c in reversed(backend.calls) if c[0] == "llm"]
    structured = json.loads(inputs["sampling_parameters"][0])["structured_outputs"]
    assert structured["param"] == "tools" and lark in structured["grammar"] and "get_weather" in structured["grammar"]
    prompt = inputs["text_input"][0].decode()
    assert "<tools>" in prompt and '"get_weather"' in prompt  # the generic format: this template has no tools


async def test_tool_choice_none_sends_no_grammar_and_no_tools(client, backend):
    assert (await client.post(URL, json=chat(tools=[WEATHER], tool_choice="none"))).status_code == 200
    (_, inputs), *_ = [c for c in reversed(backend.calls) if c[0] == "llm"]
    assert "structured_outputs" not in json.loads(inputs["sampling_parameters"][0])
    assert "<tools>" not in inputs["text_input"][0].decode()


@pytest.fixture
def roomy(backend):
    """A context that holds the generic tool instructions, and answers as long as their script."""
    backend.llm.context_length, backend.llm.eos_after = 2000, 100
    return backend


async def test_a_tool_call_in_the_answer_becomes_message_tool_calls(client, roomy):
    backend = roomy
    backend.llm.script = ["Let me check.", "\n", CALL[:20], CALL[20:]]
    r = await client.post(URL, json=chat(tools=[WEATHER]))
    (choice,) = r.json()["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Let me check."
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


async def test_streamed_tool_calls_come_as_openai_deltas(client, roomy):
    backend = roomy
    backend.llm.script = ["Sure", ". ", CALL[:7], CALL[7:30], CALL[30:], "\n", CALL.replace("Paris", "Rome")]
    r = await client.post(URL, json=chat(tools=[WEATHER], stream=True))
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    content = "".join(d.get("content") or "" for d in deltas)
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert content == "Sure. " and "<tool_call>" not in content
    heads = [tc for tc in calls if "id" in tc]
    assert [h["index"] for h in heads] == [0, 1] and all(h["function"]["arguments"] == "" for h in heads)
    arguments = {i: "".join(tc["function"]["arguments"] for tc in calls if tc["index"] == i) for i in (0, 1)}
    assert [json.loads(a)["city"] for a in arguments.values()] == ["Paris", "Rome"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_earlier_calls_and_results_are_written_into_the_conversation(client, roomy):
    backend = roomy
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]
    assert (await client.post(URL, json=chat(messages=messages, tools=[WEATHER]))).status_code == 200
    prompt = backend.llm.prompts[-1]
    assert CALL in prompt and "<tool_response>" in prompt and "sunny, 21 C" in prompt


@pytest.mark.parametrize("fields, param", [
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}}, "tool_choice"),
    ({"tools": [WEATHER], "guided_regex": "a+"}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools"),
])
async def test_inconsistent_tool_requests_are_a_400(client, fields, param):
    r = await client.post(URL, json=chat(**fields))
    assert r.status_code == 400 and r.json()["error"]["param"].startswith(param), r.text


LLAMA_CALL = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
# A template in the style of Llama 3.1's: it renders the tools, and earlier calls with `arguments | tojson`.
TOOLS_TEMPLATE = (
    "{% if tools %}<|tools|>{% for t in tools %}{{ t.function.name }};{% endfor %}{% endif %}"
    "{% for m in messages %}<|{{ m.role }}|>{% if m.tool_calls %}{% for c in m.tool_calls %}"
    '{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments | tojson }}}{% endfor %}'
    "{% else %}{{ m.content }}{% endif %}{% endfor %}<|assistant|>"
)


async def test_tools_beside_a_json_schema_allow_that_json_or_calls(client, backend):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    r = await client.post(URL, json=chat(tools=[WEATHER], response_format={
        "type": "json_schema", "json_schema": {"name": "final", "schema": schema, "strict": True}}))
    assert r.status_code == 200, r.text
    (_, inputs), *_ = [c for c in reversed(backend.calls) if c[0] == "llm"]
    grammar = json.loads(inputs["sampling_parameters"][0])["structured_outputs"]["grammar"]
    assert grammar.startswith("start: answer | call") and '"answer"' in grammar and "get_weather" in grammar


async def test_a_llama3_json_model_gets_its_format_grammar_and_parser(client, roomy):
    backend = roomy
    backend.models["llm"]["tool_call_parser"] = "llama3_json"
    backend.llm.script = ['{"name": "get_weather", ', '"parameters": {"city": "Paris"}}; ', LLAMA_CALL]
    r = await client.post(URL, json=chat(tools=[WEATHER], stream=True))
    deltas = [c["choices"][0]["delta"] for c in sse_events(r.text)[:-1] if c["choices"]]
    heads = [tc for d in deltas for tc in d.get("tool_calls", []) if "id" in tc]
    assert [h["function"]["name"] for h in heads] == ["get_weather"] * 2
    assert "".join(d.get("content") or "" for d in deltas) == ""
    (_, inputs), *_ = [c for c in reversed(backend.calls) if c[0] == "llm"]
    grammar = json.loads(inputs["sampling_parameters"][0])["structured_outputs"]["grammar"]
    assert grammar.startswith("start: TEXT | call") and '"parameters"' in grammar
    assert '"parameters": <dictionary' in inputs["text_input"][0].decode()  # the format's generic instructions
    backend.llm.script = ["It is sunny."]
    (choice,) = (await client.post(URL, json=chat(tools=[WEATHER]))).json()["choices"]
    assert choice["message"]["content"] == "It is sunny." and choice["finish_reason"] == "stop"


async def test_a_template_that_renders_tools_gets_them_and_arguments_as_objects(client, roomy):
    backend = roomy
    backend.models["llm"]["chat_template"] = TOOLS_TEMPLATE
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    assert (await client.post(URL, json=chat(messages=messages, tools=[WEATHER]))).status_code == 200
    prompt = backend.llm.prompts[-1]
    assert prompt.startswith("<|tools|>get_weather;") and LLAMA_CALL in prompt and "<tool_response>" not in prompt


async def test_an_unknown_tool_call_parser_in_a_config_is_a_server_error(client, backend):
    backend.models["llm"]["tool_call_parser"] = "no_such_format"
    r = await client.post(URL, json=chat(tools=[WEATHER]))
    assert_error(r, 500)
    assert "tool_call_parser `no_such_format`" in r.json()["error"]["message"]
