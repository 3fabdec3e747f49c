"""frontend/tools: each call format's generic prompt, grammar per tool_choice (checked by llguidance on SmolLM2's
real tokenizer), and parsing of whole and streamed answers; the format a model's config names."""

from __future__ import annotations

import json

import pytest

from frontend import tools
from frontend.errors import APIError
from triton_models import contract

HERMES, LLAMA3 = tools.FORMATS["hermes"], tools.FORMATS["llama3_json"]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
OTHER = {"type": "function", "function": {"name": "other"}}
NAMES = frozenset({"get_weather", "other"})
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
LLAMA_CALL = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
HISTORY = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"},
           {"role": "assistant", "content": "", "tool_calls": [
               {"id": "c1", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
           {"role": "tool", "content": "sunny", "tool_call_id": "c1"}]



def arguments(calls: list[dict]) -> list[dict]:
    return [json.loads(c["function"]["arguments"]) for c in calls]


def test_the_config_parameter_picks_the_format():
    assert set(tools.FORMATS) == set(contract.TOOL_CALL_PARSERS)
    assert tools.tool_format({}, "m") is tools.FORMATS[contract.DEFAULT_TOOL_CALL_PARSER]
    assert tools.tool_format({contract.TOOL_CALL_PARSER: "llama3_json"}, "m") is LLAMA3
    with pytest.raises(APIError, match="tool_call_parser `mistral`"):
        tools.tool_format({contract.TOOL_CALL_PARSER: "mistral"}, "m")


# -- Hermes ------------------------------------------------------------------------------------------------

def test_hermes_answers_split_into_content_and_calls():
    content, calls = HERMES.parse(f"Checking.\n{CALL}\n{CALL.replace('Paris', 'Rome')}", NAMES)
    assert content == "Checking." and [a["city"] for a in arguments(calls)] == ["Paris", "Rome"]
    assert calls[0]["id"].startswith("call_") and calls[0]["id"] != calls[1]["id"]
    assert HERMES.parse("no calls here", NAMES) == ("no calls here", [])
    assert HERMES.parse("<tool_call>not json</tool_call>", NAMES) == ("<tool_call>not json</tool_call>", [])
    assert HERMES.parse(CALL, NAMES)[0] is None


def test_hermes_streamed_text_is_held_only_while_it_may_open_a_block():
    parser = HERMES.stream_parser(NAMES)
    assert parser.feed("Hello <tool") == [("content", "Hello ")]
    assert parser.feed("_ca") == []
    assert parser.feed("t is not a tag") == [("content", "<tool_cat is not a tag")]
    events = parser.feed(CALL[:15]) + parser.feed(CALL[15:]) + parser.feed("\n") + parser.feed("")
    assert [kind for kind, _ in events] == ["call"] and parser.calls == 1
    assert parser.flush() == []  # the separator after a call is not content
    unfinished = HERMES.stream_parser(NAMES)
    unfinished.feed(CALL[:30])
    assert unfinished.flush() == [("content", CALL[:30])]  # cut by max_tokens: the text as it came


def test_hermes_grammar_per_tool_choice(accepts):
    assert HERMES.grammar([WEATHER], "none", True) is None
    auto = HERMES.grammar([WEATHER], "auto", True)
    assert "trigger[lazy]" in auto and accepts("grammar", auto, "It is sunny.")
    assert accepts("grammar", auto, f"Let me look.\n{CALL}\n{CALL}")
    assert not accepts("grammar", HERMES.grammar([WEATHER], "auto", False), f"{CALL}\n{CALL}")
    required = HERMES.grammar([WEATHER], "required", False)
    assert accepts("grammar", required, CALL)
    assert not accepts("grammar", required, "It is sunny.")
    assert not accepts("grammar", required, CALL.replace('"city"', '"town"'))  # against the schema
    named = HERMES.grammar([WEATHER, OTHER], {"type": "function", "function": {"name": "other"}}, True)
    assert accepts("grammar", named, '<tool_call>{"name": "other", "arguments": {}}</tool_call>')
    one = '<tool_call>{"name": "other", "arguments": {}}</tool_call>'
    assert not accepts("grammar", named, f"{one}\n{one}")  # a named function: exactly one call
    assert not accepts("grammar", named, CALL)


def test_hermes_generic_messages_carry_tools_calls_and_results():
    out = HERMES.generic_messages(HISTORY, [WEATHER])
    assert out[0]["content"].startswith("Be brief.\n\nYou may call") and '"get_weather"' in out[0]["content"]
    assert out[2] == {"role": "assistant", "content": CALL}
    assert out[3]["role"] == "user" and "<tool_response>" in out[3]["content"] and "sunny" in out[3]["content"]
    assert HISTORY[2]["tool_calls"]  # the caller's messages are not changed


def test_without_tools_offered_only_the_history_is_rewritten():
    out = HERMES.generic_messages(HISTORY[1:3], [])
    assert [m["role"] for m in out] == ["user", "assistant"] and out[1]["content"] == CALL


# -- Llama 3 JSON ------------------------------------------------------------------------------------------

def test_llama3_answers_are_wholly_calls_or_text():
    content, calls = LLAMA3.parse(LLAMA_CALL, NAMES)
    assert content is None and arguments(calls) == [{"city": "Paris"}]
    content, calls = LLAMA3.parse(f"<|python_tag|>{LLAMA_CALL}; {LLAMA_CALL.replace('Paris', 'Rome')}", NAMES)
    assert content is None and [a["city"] for a in arguments(calls)] == ["Paris", "Rome"]
    with_arguments = '{"name": "get_weather", "arguments": {"city": "Oslo"}}'  # vLLM reads either key
    assert arguments(LLAMA3.parse(with_arguments, NAMES)[1]) == [{"city": "Oslo"}]
    not_offered = '{"name": "France", "parameters": {}}'  # a JSON answer with a `name`, not a call
    for text in ("It is sunny.", '{"city": "Paris"}', '{"name": "get_weather", ', not_offered):
        assert LLAMA3.parse(text, NAMES) == (text, [])
    content, calls = LLAMA3.parse(f"{LLAMA_CALL}; {LLAMA_CALL[:20]}", NAMES)  # cut by max_tokens: as when streamed
    assert content == LLAMA_CALL[:20] and len(calls) == 1


def test_llama3_stream_decides_on_the_first_visible_character():
    parser = LLAMA3.stream_parser(NAMES)
    assert parser.feed(" ") == [] and parser.feed("<|python") == []
    assert parser.feed("_tag|>" + LLAMA_CALL[:20]) == []
    (kind, call), = parser.feed(LLAMA_CALL[20:] + "; ")
    assert kind == "call" and json.loads(call["function"]["arguments"]) == {"city": "Paris"} and parser.calls == 1
    assert [k for k, _ in parser.feed(LLAMA_CALL)] == ["call"] and parser.flush() == []
    text = LLAMA3.stream_parser(NAMES)
    assert text.feed("\n") == [] and text.feed("It is") == [("content", "\nIt is")]
    assert text.feed(" {sunny}") == [("content", " {sunny}")] and text.flush() == []
    cut = LLAMA3.stream_parser(NAMES)
    assert cut.feed(LLAMA_CALL[:25]) == [] and cut.flush() == [("content", LLAMA_CALL[:25])]


def test_llama3_grammar_per_tool_choice(accepts):
    assert LLAMA3.grammar([WEATHER], "none", True) is None
    auto = LLAMA3.grammar([WEATHER], "auto", True)
    assert accepts("grammar", auto, "It is sunny.")
    assert accepts("grammar", auto, f"{LLAMA_CALL}; {LLAMA_CALL}")
    assert not accepts("grammar", auto, '{"name": "get_weather", "parameters": {"town": "Paris"}}')
    required = LLAMA3.grammar([WEATHER], "required", False)
    assert accepts("grammar", required, LLAMA_CALL)
    assert not accepts("grammar", required, f"{LLAMA_CALL}; {LLAMA_CALL}")
    assert not accepts("grammar", required, "It is sunny.")
    named = LLAMA3.grammar([WEATHER, OTHER], {"type": "function", "function": {"name": "other"}}, True)
    assert accepts("grammar", named, '{"name": "other", "parameters": {}}')
    assert not accepts("grammar", named, LLAMA_CALL)


def test_llama3_generic_messages_write_calls_as_json():
    out = LLAMA3.generic_messages(HISTORY, [WEATHER])
    assert '"parameters": <dictionary' in out[0]["content"] and '"get_weather"' in out[0]["content"]
    assert out[2] == {"role": "assistant", "content": LLAMA_CALL}
    assert out[3]["role"] == "user" and "sunny" in out[3]["content"]


def test_templates_that_render_tools_get_arguments_as_objects():
    out = tools.arguments_as_objects(HISTORY)
    assert out[2]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert HISTORY[2]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'  # not changed
    assert out[3] is HISTORY[3]


ANSWER = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
          "additionalProperties": False}


@pytest.mark.parametrize("call_format, call", [(HERMES, CALL), (LLAMA3, LLAMA_CALL)])
def test_beside_a_json_answer_format_auto_allows_that_json_or_calls(accepts, call_format, call):
    grammar = call_format.grammar([WEATHER], "auto", True, ANSWER)
    assert accepts("grammar", grammar, '{"name": "Paris"}')
    assert accepts("grammar", grammar, call)
    assert not accepts("grammar", grammar, "It is sunny.")
    assert not accepts("grammar", grammar, '{"name": 5}')
    assert call_format.parse('{"name": "Paris"}', NAMES) == ('{"name": "Paris"}', [])
    assert call_format.grammar([WEATHER], "required", True, ANSWER) == call_format.grammar([WEATHER], "required", True)
