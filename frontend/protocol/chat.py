"""POST /v1/chat/completions, as in OpenAI's API reference (text in, text out, structured outputs; no tools
yet)."""

from __future__ import annotations

import json
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from frontend.errors import InvalidRequest
from frontend.protocol.common import FieldError, Strict
from frontend.protocol.generation import CompletionUsage, GenerationRequest
from frontend.tools.base import ToolFormat
from triton_models.contract import MAX_LOGPROBS, STRUCTURED_PARAM


class ImageURL(Strict):
    url: str  # a data URI, or an http(s) URL the frontend fetches (frontend/images_fetch.py)
    detail: Literal["auto", "low", "high"] | None = None  # accepted; the model's own processor sets the size


class ContentPart(Strict):
    """One part of a message's content: `text`, or `image_url` for models that take images (checked by the
    service, by index)."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(Strict):
    model_config = ConfigDict(extra="allow")  # tool_calls, tool_call_id, audio...: refused by the service

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class JSONSchemaFormat(Strict):
    """`response_format.json_schema`. The schema is always enforced by the engine's grammar (`strict` or not);
    a keyword the grammar cannot enforce is refused by name."""

    model_config = ConfigDict(strict=True, populate_by_name=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    json_schema: dict | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self):
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type json_schema, and only with it")
        return self

    def structured_outputs(self) -> dict | None:
        """The engine's `structured_outputs` sampling parameter (triton_models.contract.STRUCTURED_OUTPUTS)."""
        if self.type == "json_object":
            return {"json_object": True}
        if self.type == "json_schema":
            schema = self.json_schema.json_schema
            return {"json": schema if schema is not None else {}}  # no schema: any JSON value
        return None


class FunctionDefinition(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict | None = None  # a JSON schema; its keywords must be enforceable, as response_format's
    strict: bool | None = None  # accepted: arguments always follow the schema (frontend/tools.py)


class Tool(Strict):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(Strict):
    name: str


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


class ChatCompletionRequest(GenerationRequest):
    unsupported_fields = ("functions", "function_call", "audio", "modalities", "prediction", "web_search_options",
                          "reasoning_effort")
    neutral_values: ClassVar[dict[str, tuple]] = {"modalities": (["text"],)}

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    response_format: ResponseFormat | None = None
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True

    @model_validator(mode="after")
    def _tool_choice_names_a_tool(self):
        choice = self.tool_choice
        if choice not in (None, "none", "auto") and not self.tools:
            raise FieldError("tool_choice", "tool_choice requires tools")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in {t.function.name for t in self.tools}:
            raise FieldError("tool_choice", f"tool_choice names `{choice.function.name}`, which is not in tools")
        constraint = self.structured_outputs()
        if self.calls_tools and constraint is not None and not ({"json", "json_object"} & constraint.keys()):
            raise FieldError("tools", "tools can be combined with a JSON response_format, not with guided_regex, "
                                      "guided_choice or guided_grammar")
        return self

    @property
    def effective_tool_choice(self):
        """OpenAI's default: `auto` when tools are given, else `none`."""
        if not self.tools:
            return "none"
        return self.tool_choice.model_dump() if isinstance(self.tool_choice, NamedToolChoice) else (
            self.tool_choice or "auto")

    @property
    def calls_tools(self) -> bool:
        return self.effective_tool_choice != "none"

    def structured_outputs(self) -> dict | None:
        """The constraint of `response_format` or `guided_*` (tools: `tool_constraint`, never both)."""
        from_format = self.response_format.structured_outputs() if self.response_format is not None else None
        return from_format or super().structured_outputs()

    def tool_constraint(self, call_format: ToolFormat) -> dict | None:
        """The engine's constraint that keeps tool calls valid in the model's format (None: no tools called);
        with a JSON response format, an answer that is not a call must be that JSON (as OpenAI allows)."""
        if not self.calls_tools:
            return None
        tools = [t.model_dump(exclude_none=True) for t in self.tools]
        answer = None
        if (constraint := self.structured_outputs()) is not None:
            schema = constraint.get("json", {"type": "object"})
            try:
                answer = json.loads(schema) if isinstance(schema, str) else schema
            except ValueError as exc:
                raise InvalidRequest(f"guided_json is not JSON: {exc}", param="guided_json") from exc
        grammar = call_format.grammar(tools, self.effective_tool_choice, self.parallel_tool_calls, answer)
        return {"grammar": grammar, STRUCTURED_PARAM: "tools"}

    @property
    def tool_names(self) -> frozenset[str]:
        return frozenset(t.function.name for t in self.tools or ())

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self):
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self

    @property
    def completion_limit(self) -> int | None:
        """`max_completion_tokens` (OpenAI's current name) over the deprecated `max_tokens`."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[dict] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: CompletionUsage


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: ChunkDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    """One SSE event of a streamed chat completion (`usage` only on the last one, with include_usage)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
