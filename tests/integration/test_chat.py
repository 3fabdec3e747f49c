"""Chat and text completions end to end: openai SDK -> frontend -> real Triton -> SmolLM2 (greedy unless seeded)."""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import openai
import pytest
from openai import AsyncOpenAI
from pydantic import BaseModel, Field
from transformers import AutoTokenizer

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital city of France? Answer in one word."}]
NO_CACHE = {"Cache-Control": "no-store"}  # every request here must reach the engine, not the response cache


@pytest.fixture(scope="module")
def tokenizer(repository):
    return AutoTokenizer.from_pretrained(str(repository / MODEL / "1"))


@pytest.fixture
def client(openai_client):
    return openai_client.with_options(default_headers=NO_CACHE)


@pytest.fixture
async def async_client(frontend):
    async with AsyncOpenAI(base_url=frontend.base_url, api_key="unused", max_retries=0, timeout=120,
                           default_headers=NO_CACHE) as client:
        yield client


def test_answer_is_sane_and_usage_exact(client, tokenizer):
    result = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=40)
    assert result.id.startswith("chatcmpl-") and result.object == "chat.completion" and result.model == MODEL
    (choice,) = result.choices
    assert "Paris" in choice.message.content and choice.message.role == "assistant"
    assert choice.finish_reason == "stop" and "<|im_end|>" not in choice.message.content
    # The frontend renders the model's template as transformers does; Triton counts the tokens.
    prompt = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    assert result.usage.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    answer_tokens = len(tokenizer(choice.message.content, add_special_tokens=False)["input_ids"])
    assert answer_tokens <= result.usage.completion_tokens <= answer_tokens + 2  # + <|im_end|>, re-tokenising
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens


def test_stream_adds_up_to_the_plain_answer_with_usage(client):
    plain = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24)
    chunks = list(client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24,
                                                        stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_max_tokens_ends_with_length(client):
    result = client.chat.completions.create(model=MODEL, messages=QUESTION, max_completion_tokens=3)
    assert result.choices[0].finish_reason == "length" and result.usage.completion_tokens == 3


def test_seed_makes_sampling_repeatable(client):
    def sample(seed):
        return client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Tell me a story."}], temperature=1.0, seed=seed,
            max_tokens=16, extra_body={"ignore_eos": True}).choices[0].message.content

    first = sample(1234)
    assert sample(1234) == first and sample(99) != first


def test_stop_string_is_cut_and_not_emitted(client):
    full = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0,
                                                 max_tokens=24).choices[0].message.content
    stop = "Paris"
    result = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24,
                                                   stop=[stop, "never-there"])
    assert result.choices[0].message.content == full[: full.index(stop)]
    assert result.choices[0].finish_reason == "stop"


def test_n_choices_with_seed(client):
    result = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=1.0, seed=5, n=2,
                                                   max_tokens=8, extra_body={"ignore_eos": True})
    assert [c.index for c in result.choices] == [0, 1]
    assert result.choices[0].message.content != result.choices[1].message.content
    assert result.usage.completion_tokens == 16


def test_logprobs_greedy_tokens_are_the_best(client):
    result = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=6,
                                                   logprobs=True, top_logprobs=3)
    content = result.choices[0].logprobs.content
    assert "".join(t.token for t in content) == result.choices[0].message.content
    for token in content:
        assert len(token.top_logprobs) == 3 and token.top_logprobs[0].token == token.token
        assert token.logprob == pytest.approx(token.top_logprobs[0].logprob) and token.logprob <= 0
        assert token.top_logprobs[0].logprob >= token.top_logprobs[1].logprob >= token.top_logprobs[2].logprob


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_over_the_context_is_400(client, stream):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * 9000}],
                                              stream=stream, max_tokens=4)
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "messages"
    assert "8192" in caught.value.message


def test_unsupported_field_is_refused_by_name(client):
    with pytest.raises(openai.BadRequestError) as caught:  # the legacy function-calling API (tools replace it)
        client.chat.completions.create(model=MODEL, messages=QUESTION, functions=[{"name": "f"}])
    assert caught.value.param == "functions"


class City(BaseModel):
    name: str = Field(max_length=40)
    country: str = Field(max_length=40)
    population_millions: float
    landmarks: list[Literal["tower", "river", "museum", "bridge", "cathedral"]] = Field(max_length=3)


def test_parse_with_a_pydantic_model_returns_a_validated_object(client):
    """`client.chat.completions.parse` sends the model's strict JSON schema; the engine's grammar makes the
    answer parse and validate every time, even for a 135M model."""
    for question in ("Describe Paris as JSON.", "Tell me about Rome.", "Which city has the Eiffel Tower?"):
        result = client.chat.completions.parse(model=MODEL, messages=[{"role": "user", "content": question}],
                                               response_format=City, temperature=0, max_tokens=120)
        (choice,) = result.choices
        assert choice.finish_reason == "stop", choice.message.content
        assert isinstance(choice.message.parsed, City), choice.message.content


def test_json_object_mode_streams_a_json_object(client):
    """(A JSON object can still be cut short by max_tokens, finish_reason "length", as OpenAI's can.)"""
    parts, finish = [], None
    question = "Return a JSON object with the keys name and age for a person."
    for chunk in client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": question}],
            response_format={"type": "json_object"}, temperature=0, max_tokens=120, stream=True):
        parts.extend(c.delta.content or "" for c in chunk.choices)
        finish = next((c.finish_reason for c in chunk.choices if c.finish_reason), finish)
    assert finish == "stop" and set(json.loads("".join(parts))) == {"name", "age"}, parts


@pytest.mark.parametrize("schema, named", [
    ({"type": "object", "if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]}}, '"if"'),
    ({"type": "object", "properties": {"email": {"type": "string", "format": "no-such-format"}}}, "no-such-format"),
])
def test_a_schema_keyword_the_grammar_cannot_enforce_is_a_400_naming_it(client, schema, named):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8, response_format={
            "type": "json_schema", "json_schema": {"name": "thing", "schema": schema}})
    assert caught.value.param == "response_format" and named in caught.value.message


async def test_concurrent_streams_each_get_their_own_greedy_text(async_client):
    """8 streams at once get exactly the text each gets alone (issue 13: any difference fails)."""
    questions = ["What is 2+2?", "Name a colour.", "Say hello.", "What is the capital of Italy?",
                 "Count to three.", "Name an animal.", "What is water?", "Name a fruit."]

    async def alone(question: str) -> str:
        result = await async_client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=8)
        return result.choices[0].message.content

    async def streamed(question: str) -> str:
        parts = []
        async for chunk in await async_client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=8,
                stream=True):
            parts.extend(c.delta.content or "" for c in chunk.choices)
        return "".join(parts)

    references = [await alone(q) for q in questions]
    together = await asyncio.gather(*(streamed(q) for q in questions))
    differing = [(q, text, got) for q, text, got in zip(questions, references, together) if got != text]
    assert not differing, "\n".join(f"{q!r}: alone {text!r}, concurrent {got!r}"
                                     for q, text, got in differing)


def test_completions_answer_and_echo(client):
    result = client.completions.create(model=MODEL, prompt="The capital of France is", temperature=0,
                                              max_tokens=8)
    assert result.object == "text_completion" and result.id.startswith("cmpl-")
    assert "Paris" in result.choices[0].text
    echoed = client.completions.create(model=MODEL, prompt="The capital of France is", temperature=0,
                                              max_tokens=8, echo=True)
    assert echoed.choices[0].text == "The capital of France is" + result.choices[0].text
    assert echoed.usage == result.usage


def test_completions_prompt_list_stream_and_logprobs(client):
    prompts = ["The capital of France is", "One, two, three,"]
    plain = client.completions.create(model=MODEL, prompt=prompts, temperature=0, max_tokens=6, logprobs=2)
    assert [c.index for c in plain.choices] == [0, 1]
    for choice in plain.choices:
        assert "".join(choice.logprobs.tokens) == choice.text
        assert all(len(top) == 2 for top in choice.logprobs.top_logprobs)
    texts = {0: "", 1: ""}
    for chunk in client.completions.create(model=MODEL, prompt=prompts, temperature=0, max_tokens=6,
                                                  stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert [texts[0], texts[1]] == [c.text for c in plain.choices]


def test_logit_bias_forces_and_bans_tokens(client, tokenizer):
    forced = tokenizer.encode(" banana", add_special_tokens=False)
    assert len(forced) == 1
    result = client.completions.create(model=MODEL, prompt="My favourite fruit is", temperature=0, max_tokens=3,
                                       logit_bias={str(forced[0]): 100})
    assert result.choices[0].text == " banana" * 3
    plain = client.completions.create(model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=1)
    first = tokenizer.encode(plain.choices[0].text, add_special_tokens=False)[0]
    banned = client.completions.create(model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=1,
                                       logit_bias={str(first): -100})
    assert banned.choices[0].text != plain.choices[0].text
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="x", max_tokens=1, logit_bias={"10000000": 5})
    assert caught.value.param == "logit_bias" and "outside the vocabulary" in caught.value.message


def test_vllm_guided_extensions_constrain_completions(client):
    choice = client.completions.create(model=MODEL, prompt="Is the sky blue? Answer:", temperature=0,
                                       max_tokens=10, extra_body={"guided_choice": ["yes", "no", "maybe"]})
    assert choice.choices[0].text in ("yes", "no", "maybe") and choice.choices[0].finish_reason == "stop"
    regex = client.completions.create(model=MODEL, prompt="The year the first moon landing happened:",
                                      temperature=0, max_tokens=10, extra_body={"guided_regex": "[0-9]{4}"})
    assert len(regex.choices[0].text) == 4 and regex.choices[0].text.isdigit()
    typed = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=40,
                                           extra_body={"guided_json": {"type": "object", "properties": {
                                               "city": {"type": "string", "maxLength": 20}}, "required": ["city"],
                                               "additionalProperties": False}})
    assert set(json.loads(typed.choices[0].message.content)) == {"city"}


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}},
                                       "required": ["zone"], "additionalProperties": False}}}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather like in Paris today?"}]


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_calls_always_validate(client, tool_choice):
    result = client.chat.completions.create(model=MODEL, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL, TIME_TOOL],
                                            tool_choice=tool_choice, parallel_tool_calls=False, temperature=0,
                                            max_tokens=80)
    (choice,) = result.choices
    assert choice.finish_reason == "tool_calls", choice.message
    (call,) = choice.message.tool_calls
    arguments = json.loads(call.function.arguments)
    if isinstance(tool_choice, dict):
        assert call.function.name == "get_weather"
    if call.function.name == "get_weather":
        assert set(arguments) == {"city", "unit"} and arguments["unit"] in ("celsius", "fahrenheit")
    else:
        assert set(arguments) == {"zone"}
    assert call.id.startswith("call_") and choice.message.content is None


def test_streamed_tool_call_and_the_answer_after_its_result(client):
    stream = client.chat.completions.create(model=MODEL, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL],
                                            tool_choice="required", parallel_tool_calls=False, temperature=0,
                                            max_tokens=80, stream=True)
    calls, finish = {}, None
    for chunk in stream:
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                entry["id"] = tc.id or entry["id"]
                entry["name"] = (tc.function.name if tc.function and tc.function.name else entry["name"])
                entry["arguments"] += tc.function.arguments or "" if tc.function else ""
            finish = c.finish_reason or finish
    assert finish == "tool_calls" and calls, calls
    first = calls[0]
    assert first["name"] == "get_weather" and set(json.loads(first["arguments"])) == {"city", "unit"}
    followed = client.chat.completions.create(model=MODEL, temperature=0, max_tokens=30, tools=[WEATHER_TOOL], messages=[
        *WEATHER_QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [{"id": first["id"], "type": "function", "function": {
            "name": first["name"], "arguments": first["arguments"]}}]},
        {"role": "tool", "tool_call_id": first["id"], "content": '{"temperature": 21, "sky": "sunny"}'}],
        tool_choice="none")
    assert followed.choices[0].finish_reason in ("stop", "length") and followed.choices[0].message.content


def test_auto_may_answer_in_text(client):
    result = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello."}],
                                            tools=[WEATHER_TOOL], temperature=0, max_tokens=20)
    (choice,) = result.choices
    if choice.message.tool_calls:  # a call it chose must still validate
        assert set(json.loads(choice.message.tool_calls[0].function.arguments)) == {"city", "unit"}
        assert choice.finish_reason == "tool_calls"
    else:
        assert choice.message.content and "<tool_call>" not in choice.message.content


SAMPLED_SCHEMAS = [
    {"type": "object", "properties": {
        "title": {"type": "string", "maxLength": 30}, "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
        "genres": {"type": "array", "items": {"enum": ["drama", "comedy", "action", "horror"]}, "maxItems": 3}},
     "required": ["title", "year", "genres"], "additionalProperties": False},
    {"type": "object", "$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"},
                                                                          "y": {"type": "integer"}},
                                           "required": ["x", "y"], "additionalProperties": False}},
     "properties": {"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"},
                    "closed": {"type": "boolean"}},
     "required": ["start", "end", "closed"], "additionalProperties": False},
    {"type": "object", "properties": {
        "answer": {"anyOf": [{"type": "integer"}, {"const": "unknown"}]},
        "confidence": {"enum": ["low", "medium", "high"]}, "note": {"type": ["string", "null"], "maxLength": 40}},
     "required": ["answer", "confidence", "note"], "additionalProperties": False},
]


@pytest.mark.parametrize("schema", SAMPLED_SCHEMAS)
def test_samples_at_temperature_one_all_validate(client, schema):
    """8 samples per schema at temperature 1.0 (n=4, two requests): every one parses and validates."""
    import jsonschema

    texts = []
    for seed in (1, 2):
        result = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Fill in the JSON."}], temperature=1.0, seed=seed,
            n=4, max_tokens=150, response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema,
                                                                                         "strict": True}})
        texts += [(c.finish_reason, c.message.content) for c in result.choices]
    for finish, text in texts:
        assert finish == "stop", text
        jsonschema.validate(json.loads(text), schema)
