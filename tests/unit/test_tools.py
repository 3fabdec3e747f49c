"""frontend/tools.py: the generic prompt format, the grammar per tool_choice, parsing whole and streamed answers."""

from __future__ import annotations

import json

from frontend import tools

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


def test_whole_answers_split_into_content_and_calls():
    content, calls = tools.parse(f"Checking.\n{CALL}\n{CALL.replace('Paris', 'Rome')}")
    assert content == "Checking." and [json.loads(c["function"]["arguments"])["city"] for c in calls] == ["Paris",
                                                                                                          "Rome"]
    assert tools.parse("no calls here") == ("no calls here", [])
    assert tools.parse("<tool_call>not json</tool_call>") == ("<tool_call>not json</tool_call>", [])
    assert tools.parse(CALL)[0] is None


def test_streamed_text_is_held_only_while_it_may_open_a_block():
    parser = tools.StreamParser()
    assert parser.feed("Hello <tool") == [("content", "Hello ")]
    assert parser.feed("_ca") == []
    assert parser.feed("t is not a tag") == [("content", "<tool_cat is not a tag")]
    events = parser.feed(CALL[:15]) + parser.feed(CALL[15:]) + parser.feed("\n") + parser.feed("")
    assert [kind for kind, _ in events] == ["call"] and parser.calls == 1
    assert parser.flush() == []  # the separator after a call is not content
    unfinished = tools.StreamParser()
    unfinished.feed(CALL[:30])
    assert unfinished.flush() == [("content", CALL[:30])]  # cut by max_tokens: the text as it came


def test_grammar_per_tool_choice():
    assert tools.grammar([WEATHER], "none", True) is None
    auto = tools.grammar([WEATHER], "auto", True)
    assert "trigger[lazy]" in auto and '("\\n<tool_call>" body)*' in auto
    assert '("\\n<tool_call>" body)*' not in tools.grammar([WEATHER], "auto", False)
    required = tools.grammar([WEATHER], "required", False)
    assert required.startswith("start: call\n") and '"const": "get_weather"' in required
    other = {"type": "function", "function": {"name": "other"}}
    named = tools.grammar([WEATHER, other], {"type": "function", "function": {"name": "other"}}, True)
    assert '"const": "other"' in named and "get_weather" not in named


def test_generic_messages_carry_tools_calls_and_results():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "c1", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "content": "sunny", "tool_call_id": "c1"}]
    out = tools.generic_messages(messages, [WEATHER])
    assert out[0]["content"].startswith("Be brief.\n\nYou may call") and '"get_weather"' in out[0]["content"]
    assert out[2] == {"role": "assistant", "content": CALL}
    assert out[3]["role"] == "user" and "<tool_response>" in out[3]["content"] and "sunny" in out[3]["content"]
    assert messages[2]["tool_calls"]  # the caller's messages are not changed


def test_without_tools_offered_only_the_history_is_rewritten():
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "c1", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}]
    out = tools.generic_messages(messages, [])
    assert [m["role"] for m in out] == ["user", "assistant"] and out[1]["content"] == CALL
