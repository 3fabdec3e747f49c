"""What every tool-call format shares: the call objects, the JSON schema of one call, the grammar's shape, the
generic conversation rewrite for templates without tool support, and the interface a format implements."""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod

from triton_models.contract import JSON_WHITESPACE, closed_objects

Event = tuple[str, object]  # ("content", str) or ("call", call dict)


def new_call(name: str, arguments) -> dict:
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


def call_from(value, arguments_keys: tuple[str, ...], names: frozenset[str]) -> dict | None:
    """A call from a decoded JSON value `{"name": ..., <arguments key>: {...}}` naming one of the functions
    offered, or None when it is not one (a JSON answer may have a `name` too)."""
    if not isinstance(value, dict) or value.get("name") not in names:
        return None
    arguments = next((value[k] for k in arguments_keys if k in value), {})
    return new_call(value["name"], arguments)


def arguments_of(call: dict):
    """A call's arguments as JSON data (OpenAI sends them as a JSON string; templates want the object)."""
    try:
        return json.loads(call["function"].get("arguments") or "{}")
    except ValueError:
        return call["function"].get("arguments")


class StreamParser(ABC):
    """Splits a streamed answer into content and calls; `calls` counts the calls found so far."""

    calls: int = 0

    @abstractmethod
    def feed(self, text: str) -> list[Event]:
        """The events the new text completes."""

    @abstractmethod
    def flush(self) -> list[Event]:
        """The events of what is left at the end of the answer."""


class ToolFormat(ABC):
    """How one model family writes calls: the prompt's instructions when the template has none, the grammar the
    engine enforces, and the parsers of whole and streamed answers."""

    name: str
    arguments_key: str  # the key of a call's arguments in the format's JSON
    separator: str  # between parallel calls

    @abstractmethod
    def instructions(self, tools: list[dict]) -> str:
        """The system-message block that teaches the format (generic prompting)."""

    @abstractmethod
    def render_calls(self, calls: list[dict]) -> str:
        """Earlier calls as the model would have written them (generic prompting)."""

    @abstractmethod
    def call_rule(self, schema: str) -> str:
        """The Lark body of one call, given the JSON schema of a call (as `%json` text)."""

    @abstractmethod
    def auto_grammar(self, call: str, more: str) -> str:
        """The Lark grammar of `auto`: free text, or calls (`call` rule body, `more`: the repetition)."""

    @abstractmethod
    def parse(self, text: str, names: frozenset[str]) -> tuple[str | None, list[dict]]:
        """(content outside the calls or None, calls) of a whole answer; text that is no call of one of the
        functions `names` stays content."""

    @abstractmethod
    def stream_parser(self, names: frozenset[str]) -> StreamParser:
        """A parser of one streamed answer."""

    def grammar(self, tools: list[dict], choice, parallel: bool, answer: dict | None = None) -> str | None:
        """The Lark grammar the engine enforces (None for `none`): `required` and a named function allow only
        calls whose arguments validate against the function's parameters; `auto` allows free text or calls, or,
        given an `answer` JSON schema (a JSON response format beside the tools), that JSON or calls;
        `parallel_tool_calls: false` allows one call."""
        if choice == "none":
            return None
        if isinstance(choice, dict):
            tools = [t for t in tools if t["function"]["name"] == choice["function"]["name"]]
        call = self.call_rule(_json({"anyOf": [self.call_schema(t["function"]) for t in tools]}))
        # A named function is called exactly once (OpenAI: "call exactly one specific function"), whatever
        # parallel_tool_calls says; `required` and `auto` allow several when parallel calls are on.
        more = f" ({json.dumps(self.separator)} call)*" if parallel and not isinstance(choice, dict) else ""
        if choice != "auto":
            return f"start: call{more}\ncall: {call}\n"
        if answer is not None:
            return f"start: answer | call{more}\nanswer: %json {_json(answer)}\ncall: {call}\n"
        return self.auto_grammar(call, more)
    def call_schema(self, function: dict) -> dict:
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        return {"type": "object", "properties": {"name": {"const": function["name"]}, self.arguments_key: parameters},
                "required": ["name", self.arguments_key], "additionalProperties": False}

    def generic_messages(self, messages: list[dict], tools: list[dict]) -> list[dict]:
        """Template messages for a template without tool support: the instructions in the system message, earlier
        calls in the format in the assistant's text, results as `<tool_response>` user messages."""
        out = [dict(m) for m in messages]
        if tools:  # none offered (tool_choice none): only the earlier calls and results are written
            block = self.instructions(tools)
            if out and out[0]["role"] == "system":
                out[0]["content"] = f"{out[0]['content']}\n\n{block}"
            else:
                out.insert(0, {"role": "system", "content": block})
        for message in out:
            calls = message.pop("tool_calls", None)
            if calls:
                message["content"] = f"{message['content'] or ''}\n{self.render_calls(calls)}".strip()
            if message["role"] == "tool":
                message["role"] = "user"
                message["content"] = f"<tool_response>\n{message.pop('tool_call_id', '')}: " \
                                     f"{message['content']}\n</tool_response>"
        return out


def arguments_as_objects(messages: list[dict]) -> list[dict]:
    """Messages for a template that renders tools itself: call arguments as objects, as transformers documents
    and vLLM passes them (Llama's template writes `arguments | tojson`; Qwen's takes either)."""
    out = []
    for message in messages:
        if message.get("tool_calls"):
            message = {**message, "tool_calls": [
                {**c, "function": {**c["function"], "arguments": arguments_of(c)}} for c in message["tool_calls"]]}
        out.append(message)
    return out


def _json(schema: dict) -> str:
    """A schema as `%json` text, with the engine's bounded whitespace between tokens."""
    return json.dumps({**closed_objects(schema), "x-guidance": {"whitespace_pattern": JSON_WHITESPACE}})


def template_renders_tools(template_source: str) -> bool:
    return "tools" in template_source


def partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that begins `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
