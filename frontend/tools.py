"""Tool calling: tools into the prompt, a grammar that keeps calls valid, `<tool_call>` blocks out as calls.

The model is asked for Hermes-style calls, `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, the format
of Qwen's, Hermes' and many other templates. A template that renders `tools` itself gets them (and assistant
`tool_calls` and `tool` messages as they are); for any other template the generic format below goes into the
system message and earlier calls and results are written into the conversation in the same format.

The engine enforces the format with a grammar (`structured_outputs.grammar`, Lark with `%json`): `required` and a
named function allow nothing but calls whose arguments validate against the function's parameters; `auto`
allows free text or text followed by valid calls; `parallel_tool_calls: false` allows one call.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

from triton_models.contract import JSON_WHITESPACE

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(OPEN) + r"\s*(.*?)\s*" + re.escape(CLOSE), re.S)

GENERIC_INSTRUCTIONS = (
    "You may call one or more functions to answer. The functions, as JSON schemas:\n<tools>\n{tools}\n</tools>\n"
    "To call a function, answer with a block <tool_call>{{\"name\": <function name>, \"arguments\": <arguments as "
    "a JSON object>}}</tool_call> for each call, and nothing after the blocks."
)


def template_renders_tools(template_source: str) -> bool:
    return "tools" in template_source


def generic_messages(messages: list[dict], tools: list[dict]) -> list[dict]:
    """Template messages for a template without tool support: the instructions in the system message, earlier
    calls as `<tool_call>` blocks in the assistant's text, results as `<tool_response>` user messages."""
    out = [dict(m) for m in messages]
    if tools:  # none offered (tool_choice none): only the earlier calls and results are written
        block = GENERIC_INSTRUCTIONS.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{block}"
        else:
            out.insert(0, {"role": "system", "content": block})
    for message in out:
        calls = message.pop("tool_calls", None)
        if calls:
            text = "\n".join(f"{OPEN}{json.dumps({'name': c['function']['name'], 'arguments': _arguments(c)})}"
                             f"{CLOSE}" for c in calls)
            message["content"] = f"{message['content']}\n{text}".strip()
        if message["role"] == "tool":
            message["role"] = "user"
            message["content"] = f"<tool_response>\n{message.pop('tool_call_id', '')}: {message['content']}\n" \
                                 "</tool_response>"
    return out


def _arguments(call: dict):
    try:
        return json.loads(call["function"].get("arguments") or "{}")
    except ValueError:
        return call["function"].get("arguments")


def grammar(tools: list[dict], choice, parallel: bool) -> str | None:
    """The Lark grammar the engine enforces (None: `none`, nothing to enforce)."""
    if choice == "none":
        return None
    if isinstance(choice, dict):
        tools = [t for t in tools if t["function"]["name"] == choice["function"]["name"]]
    schema = json.dumps({"anyOf": [_call_schema(t["function"]) for t in tools],
                         "x-guidance": {"whitespace_pattern": JSON_WHITESPACE}})
    more = ' ("\\n" call)*' if parallel else ""
    if choice == "auto":
        more = ' ("\\n<tool_call>" body)*' if parallel else ""
        return (f'%llguidance {{}}\nstart: TEXT | trigger body{more}\ntrigger[lazy]: TEXT "<tool_call>"\n'
                f'body: %json {schema} "</tool_call>"\nTEXT: /(.|\\n)*/\n')
    return f'start: call{more}\ncall: "<tool_call>" %json {schema} "</tool_call>"\n'


def _call_schema(function: dict) -> dict:
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    return {"type": "object", "properties": {"name": {"const": function["name"]}, "arguments": parameters},
            "required": ["name", "arguments"], "additionalProperties": False}


def new_call(name: str, arguments) -> dict:
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


def parse(text: str) -> tuple[str | None, list[dict]]:
    """(content outside the blocks or None, tool calls) of a whole answer; a block that is not a call stays text."""
    calls, kept, last = [], [], 0
    for match in _BLOCK.finditer(text):
        call = _call(match.group(1))
        if call is None:
            continue
        kept.append(text[last:match.start()])
        last = match.end()
        calls.append(call)
    if not calls:
        return text, []
    kept.append(text[last:])
    return "".join(kept).strip() or None, calls


def _call(body: str) -> dict | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    return new_call(value["name"], value.get("arguments", {}))


@dataclass
class StreamParser:
    """Splits a streamed answer into content and calls: text that may open a block is held back until the block
    closes (a call) or cannot be one (text)."""

    buffer: str = ""
    calls: int = 0

    def feed(self, text: str) -> list[tuple[str, object]]:
        """("content", str) and ("call", call dict) events the new text completes."""
        self.buffer += text
        out = []
        while self.buffer:
            start = self.buffer.find(OPEN)
            if start < 0:
                if self.calls and not self.buffer.strip():
                    break  # between calls: a separator, unless text follows
                keep = _partial_suffix(self.buffer, OPEN)
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
            call = _call(self.buffer[len(OPEN):end].strip())
            block, self.buffer = self.buffer[:end + len(CLOSE)], self.buffer[end + len(CLOSE):]
            if call is None:
                out.append(("content", block))
            else:
                self.calls += 1
                out.append(("call", call))
        return out

    def flush(self) -> list[tuple[str, object]]:
        rest, self.buffer = self.buffer, ""
        return [("content", rest)] if rest and not (self.calls and not rest.strip()) else []


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that begins `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
