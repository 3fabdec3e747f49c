"""Chat templates: the model's own Jinja template (from its config parameters), rendered as transformers does.

The frontend loads no model files: the exporter copies `chat_template`, `bos_token` and `eos_token` from the
tokenizer into the model's config `parameters`. Rendering copies transformers' `apply_chat_template`
environment (sandboxed, trim_blocks, lstrip_blocks, loopcontrols, `raise_exception`, `strftime_now`, a
`tojson` that does not escape HTML), so a prompt here is byte-identical to the one transformers would build.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from frontend.errors import APIError, InvalidRequest


class TemplateRaised(Exception):
    """`raise_exception(...)` inside a template: the conversation is one the template refuses."""


def _raise_exception(message: str):
    raise TemplateRaised(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@lru_cache(maxsize=32)
def compile_template(source: str) -> jinja2.Template:
    """One compiled template per distinct source (models share templates; compiling takes milliseconds)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


def render_chat(parameters: dict[str, str], messages: list[dict], *, model: str,
                add_generation_prompt: bool = True, tools: list[dict] | None = None) -> str:
    """The prompt for `messages` under the model's template; 400 when the model has none or refuses them."""
    source = parameters.get("chat_template", "")
    if not source:
        raise InvalidRequest(f"The model `{model}` has no chat template; use /v1/completions with a plain prompt",
                             param="model", code="chat_template_missing")
    try:
        template = compile_template(source)
    except jinja2.TemplateError as exc:  # the deployment's problem, not the caller's
        raise APIError(f"the chat template of `{model}` does not compile: {exc}") from exc
    try:
        return template.render(messages=messages, add_generation_prompt=add_generation_prompt, tools=tools,
                               documents=None, bos_token=parameters.get("bos_token", ""),
                               eos_token=parameters.get("eos_token", ""))
    except TemplateRaised as exc:
        raise InvalidRequest(f"messages: {exc}", param="messages") from exc
    except jinja2.TemplateError as exc:
        raise InvalidRequest(f"messages cannot be rendered with the chat template of `{model}`: {exc}",
                             param="messages") from exc
