"""Llama 3.1+ JSON calls (vLLM's `llama3_json` parser): an answer of calls is one or more objects
`{"name": ..., "parameters": {...}}` separated by `; `, optionally after `<|python_tag|>`; an answer that does not
open with a call is text. `arguments` is read in place of `parameters`, as vLLM does."""

from __future__ import annotations

import json

from frontend.tools.base import Event, StreamParser, ToolFormat, arguments_of, call_from

PYTHON_TAG = "<|python_tag|>"
KEYS = ("parameters", "arguments")
_DECODER = json.JSONDecoder()

INSTRUCTIONS = (
    "Given the following functions, answer with a JSON object for a function call with its arguments that best "
    "answers the prompt, in the format {{\"name\": <function name>, \"parameters\": <dictionary of argument names "
    "and their values>}}, separating several calls with \"; \", and nothing else; or answer in plain text when no "
    "function helps.\n\n{tools}"
)


def _calls(body: str, names: frozenset[str]) -> tuple[list[dict], int]:
    """The calls at the start of `body` and where they end; stops at the first thing that is no whole call."""
    calls, pos, end = [], 0, 0
    while True:
        while pos < len(body) and body[pos] in " \t\n;":
            pos += 1
        try:
            value, after = _DECODER.raw_decode(body, pos)
        except ValueError:
            return calls, end
        call = call_from(value, KEYS, names)
        if call is None:
            return calls, end
        calls.append(call)
        pos = end = after


def _body(text: str) -> str:
    body = text.lstrip()
    return body[len(PYTHON_TAG):].lstrip() if body.startswith(PYTHON_TAG) else body


class Llama3Json(ToolFormat):
    name = "llama3_json"
    arguments_key = "parameters"
    separator = "; "

    def instructions(self, tools: list[dict]) -> str:
        return INSTRUCTIONS.format(tools="\n\n".join(json.dumps(t, indent=4, ensure_ascii=False) for t in tools))

    def render_calls(self, calls: list[dict]) -> str:
        return self.separator.join(json.dumps({"name": c["function"]["name"], "parameters": arguments_of(c)})
                                   for c in calls)

    def call_rule(self, schema: str) -> str:
        return f"%json {schema}"

    def auto_grammar(self, call: str, more: str) -> str:
        # A call is recognised by its first character: an answer that opens with `{` must be valid calls.
        return f"start: TEXT | call{more}\ncall: {call}\nTEXT: /[^{{](.|\\n)*/\n"

    def parse(self, text: str, names: frozenset[str]) -> tuple[str | None, list[dict]]:
        body = _body(text)
        calls, end = _calls(body, names) if body.startswith("{") else ([], 0)
        if not calls:
            return text, []
        # What follows the calls (only an answer cut by max_tokens has any) stays content, as when streamed.
        return body[end:].strip(" \t\n;") or None, calls

    def stream_parser(self, names: frozenset[str]) -> Llama3Stream:
        return Llama3Stream(names)


class Llama3Stream(StreamParser):
    """Undecided until the first visible character: `{` starts calls (each sent when its object closes), anything
    else makes the whole answer text, sent as it comes."""

    def __init__(self, names: frozenset[str]):
        self.names = names
        self.buffer = ""
        self.calls = 0
        self.mode = ""  # "", "text" or "calls"

    def feed(self, text: str) -> list[Event]:
        if self.mode == "text":
            return [("content", text)] if text else []
        self.buffer += text
        if not self.mode:
            body = _body(self.buffer)
            if not body or PYTHON_TAG.startswith(body.strip()):
                return []
            self.mode = "calls" if body.startswith("{") else "text"
            if self.mode == "text":
                rest, self.buffer = self.buffer, ""
                return [("content", rest)]
            self.buffer = body
        calls, end = _calls(self.buffer, self.names)
        self.buffer = self.buffer[end:]
        self.calls += len(calls)
        return [("call", c) for c in calls]

    def flush(self) -> list[Event]:
        rest, self.buffer = self.buffer, ""
        return [("content", rest)] if rest.strip(" \t\n;") else []
