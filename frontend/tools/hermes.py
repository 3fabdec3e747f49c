"""Hermes-style calls, `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`: the format of Qwen's, Hermes'
and many other templates, and the default (vLLM's `hermes` parser)."""

from __future__ import annotations

import json
import re

from frontend.tools.base import Event, StreamParser, ToolFormat, arguments_of, call_from, partial_suffix

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(OPEN) + r"\s*(.*?)\s*" + re.escape(CLOSE), re.S)

INSTRUCTIONS = (
    "You may call one or more functions to answer. The functions, as JSON schemas:\n<tools>\n{tools}\n</tools>\n"
    "To call a function, answer with a block <tool_call>{{\"name\": <function name>, \"arguments\": <arguments as "
    "a JSON object>}}</tool_call> for each call, and nothing after the blocks."
)


def _call(body: str, names: frozenset[str]) -> dict | None:
    try:
        return call_from(json.loads(body), ("arguments",), names)
    except ValueError:
        return None


class Hermes(ToolFormat):
    name = "hermes"
    arguments_key = "arguments"
    separator = "\n"

    def instructions(self, tools: list[dict]) -> str:
        return INSTRUCTIONS.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))

    def render_calls(self, calls: list[dict]) -> str:
        return "\n".join(f"{OPEN}{json.dumps({'name': c['function']['name'], 'arguments': arguments_of(c)})}{CLOSE}"
                         for c in calls)

    def call_rule(self, schema: str) -> str:
        return f'"{OPEN}" %json {schema} "{CLOSE}"'

    def auto_grammar(self, call: str, more: str) -> str:
        # Text until the model writes `<tool_call>` (a lazy trigger), then only valid calls.
        more = f' ("\\n{OPEN}" body)*' if more else ""
        body = call.removeprefix(f'"{OPEN}" ')
        return (f'%llguidance {{}}\nstart: TEXT | trigger body{more}\ntrigger[lazy]: TEXT "{OPEN}"\n'
                f'body: {body}\nTEXT: /(.|\\n)*/\n')

    def parse(self, text: str, names: frozenset[str]) -> tuple[str | None, list[dict]]:
        calls, kept, last = [], [], 0
        for match in _BLOCK.finditer(text):
            call = _call(match.group(1), names)
            if call is None:
                continue
            kept.append(text[last:match.start()])
            last = match.end()
            calls.append(call)
        if not calls:
            return text, []
        kept.append(text[last:])
        return "".join(kept).strip() or None, calls

    def stream_parser(self, names: frozenset[str]) -> HermesStream:
        return HermesStream(names)


class HermesStream(StreamParser):
    """Text that may open a block is held back until the block closes (a call) or cannot be one (text)."""

    def __init__(self, names: frozenset[str]):
        self.names = names
        self.buffer = ""
        self.calls = 0

    def feed(self, text: str) -> list[Event]:
        self.buffer += text
        out = []
        while self.buffer:
            start = self.buffer.find(OPEN)
            if start < 0:
                if self.calls and not self.buffer.strip():
                    break  # between calls: a separator, unless text follows
                keep = partial_suffix(self.buffer, OPEN)
                if len(self.buffer) > keep:
                    out.append(("content", self.buffer[:len(self.buffer) - keep]))
                    self.buffer = self.buffer[len(self.buffer) - keep:]
                break
            if start:
                if not (self.calls and not self.buffer[:start].strip()):
                    out.append(("content", self.buffer[:start]))
                self.buffer = self.buffer[start:]
            end = self.buffer.find(CLOSE)
            if end < 0:
                break  # a block in progress
            call = _call(self.buffer[len(OPEN):end].strip(), self.names)
            block, self.buffer = self.buffer[:end + len(CLOSE)], self.buffer[end + len(CLOSE):]
            if call is None:
                out.append(("content", block))
            else:
                self.calls += 1
                out.append(("call", call))
        return out

    def flush(self) -> list[Event]:
        rest, self.buffer = self.buffer, ""
        return [("content", rest)] if rest and not (self.calls and not rest.strip()) else []
