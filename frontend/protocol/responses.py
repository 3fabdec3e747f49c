"""POST /v1/responses, as in OpenAI's API reference (the Responses API), served by the chat models.

What a request may hold is declared here; frontend/services/responses.py turns it into a chat completion
(instructions and input items into messages, `text.format` into `response_format`, function tools into chat
tools) and the answer back into output items and stream events. Input items are checked here, each by its
index, so an error names `input[i]...` as OpenAI does.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from frontend.protocol.common import FieldError, OpenAIRequest, Strict

MAX_METADATA = 16  # OpenAI's bounds: 16 pairs, keys of 64 and values of 512 characters


class TextFormat(Strict):
    """`text.format`: `text`, `json_object`, or `json_schema` with its `name`, `schema` and `strict` inline."""

    model_config = Strict.model_config | {"populate_by_name": True}

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    json_schema: dict | None = Field(None, alias="schema")
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self):
        if self.type == "json_schema" and (self.name is None or self.json_schema is None):
            raise FieldError("text.format", "a json_schema format needs `name` and `schema`")
        return self

    def response_format(self) -> dict:
        """Chat's `response_format` of the same meaning."""
        if self.type != "json_schema":
            return {"type": self.type}
        inner = {"name": self.name, "schema": self.json_schema, "description": self.description,
                 "strict": self.strict}
        return {"type": "json_schema", "json_schema": {k: v for k, v in inner.items() if v is not None}}


class TextConfig(Strict):
    format: TextFormat | None = None
    verbosity: Literal["medium"] | None = None  # only the default: a model here has one verbosity


class FunctionTool(Strict):
    """A function tool, flat as the Responses API writes it (chat nests it under `function`)."""

    type: Literal["function"]
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None

    def chat_tool(self) -> dict:
        function = {"name": self.name, "description": self.description, "parameters": self.parameters,
                    "strict": self.strict}
        return {"type": "function", "function": {k: v for k, v in function.items() if v is not None}}


class NamedFunctionChoice(Strict):
    type: Literal["function"]
    name: str


class Reasoning(Strict):
    """Accepted only as "no reasoning": these models have no reasoning mode to configure."""

    effort: Literal["none"] | None = None
    summary: None = None
    generate_summary: None = None


class ResponsesRequest(OpenAIRequest):
    # OpenAI's fields for what this server does not have: refused by name when set (dropped when "off").
    unsupported_fields = ("background", "conversation", "prompt", "max_tool_calls", "top_logprobs",
                          "prompt_cache_key", "prompt_cache_retention", "context_management", "service_tier")
    neutral_values: ClassVar[dict[str, tuple]] = {"background": (False,), "service_tier": ("auto", "default")}

    model: str
    input: str | Annotated[list[dict[str, Any]], Field(min_length=1)]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool = False
    stream_options: dict | None = None  # `include_obfuscation`: no obfuscation is ever added
    store: bool = True
    previous_response_id: str | None = None
    text: TextConfig | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunctionChoice | None = None
    parallel_tool_calls: bool = True
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=MAX_METADATA)
    user: str | None = None
    safety_identifier: str | None = None  # OpenAI's successor of `user`: logged the same way
    include: list[str] | None = None
    reasoning: Reasoning | None = None
    truncation: Literal["disabled"] | None = None  # "auto" would drop the conversation's start: refused
    # Extensions, as on chat completions.
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    top_k: int | None = Field(None, ge=-1)

    @model_validator(mode="before")
    @classmethod
    def _drop_neutral(cls, data):
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if not (k in cls.unsupported_fields and (
                v in (None, [], {}) or v in cls.neutral_values.get(k, ())))}
        return data

    @model_validator(mode="after")
    def _checked(self):
        if self.include:
            raise FieldError("include", f"`{self.include[0]}` cannot be included: these models have no reasoning, "
                                        "logprobs or hosted tools to report")
        for i, tool in enumerate(self.tools or ()):
            if tool.get("type") != "function":
                raise FieldError(f"tools[{i}].type", f"tools of type `{tool.get('type')}` are not supported; "
                                                     "give function tools")
            try:
                FunctionTool.model_validate(tool)
            except ValueError as exc:
                raise FieldError(f"tools[{i}]", f"not a valid function tool: {_first(exc)}") from exc
        for key in self.metadata or {}:
            if len(key) > 64:
                raise FieldError("metadata", "metadata keys are at most 64 characters")
        return self

    def function_tools(self) -> list[FunctionTool]:
        """The tools as function tools (each was checked by the validator)."""
        return [FunctionTool.model_validate(tool) for tool in self.tools or ()]

    def chat_tool_choice(self):
        if isinstance(self.tool_choice, NamedFunctionChoice):
            return {"type": "function", "function": {"name": self.tool_choice.name}}
        return self.tool_choice


def _first(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors) and errors():
        first = errors()[0]
        return f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg', '')}".strip(": ")
    return str(exc)
