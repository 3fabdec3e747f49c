"""Tool calling: tools into the prompt, a grammar that keeps calls valid, the calls parsed out of the answer.

A model writes calls in its family's format, named by its config parameter `tool_call_parser` (vLLM's
`--tool-call-parser` names, declared in triton_models.contract; the exporter picks it from the chat template,
`hermes` by default). A template that renders `tools` itself gets them, with assistant `tool_calls` and `tool`
messages as they are; for any other template the format's generic instructions go into the system message and
earlier calls and results are written into the conversation (`ToolFormat.generic_messages`).

The engine enforces the format with a grammar (`structured_outputs.grammar`, Lark with `%json`).
"""

from __future__ import annotations

from frontend.errors import APIError
from frontend.tools.base import StreamParser, ToolFormat, arguments_as_objects, template_renders_tools
from frontend.tools.hermes import Hermes
from frontend.tools.llama3_json import Llama3Json
from triton_models.contract import DEFAULT_TOOL_CALL_PARSER, TOOL_CALL_PARSER

FORMATS: dict[str, ToolFormat] = {f.name: f for f in (Hermes(), Llama3Json())}

__all__ = ["FORMATS", "StreamParser", "ToolFormat", "arguments_as_objects", "template_renders_tools", "tool_format"]


def tool_format(parameters: dict[str, str], model: str) -> ToolFormat:
    """The format of the model's calls, from its config parameters."""
    name = parameters.get(TOOL_CALL_PARSER) or DEFAULT_TOOL_CALL_PARSER
    if name not in FORMATS:  # the deployment's mistake: the exporter and the admin API refuse unknown names
        raise APIError(f"the config of `{model}` names tool_call_parser `{name}`; known: {', '.join(FORMATS)}")
    return FORMATS[name]
