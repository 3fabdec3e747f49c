"""POST /v1/completions (legacy text completions), as in OpenAI's API reference."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from frontend.protocol.common import FieldError, UnsupportedField
from frontend.protocol.generation import CompletionUsage, GenerationRequest
from triton_models.contract import MAX_LOGPROBS  # OpenAI allows 5; vLLM (and this server) up to 20


class CompletionRequest(GenerationRequest):
    unsupported_fields = ("suffix",)

    # Token-id prompts (list[int] / list[list[int]]) are accepted by the schema so they can be refused by name.
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    best_of: int | None = Field(None, ge=1)

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value):
        if isinstance(value, list):
            if not value:
                raise ValueError("prompt must not be an empty list")
            if not all(isinstance(p, str) for p in value):
                raise ValueError("token-id prompts are not supported by this server; send text")
        # An empty prompt gives the engine nothing to continue (OpenAI's own models would start from
        # <|endoftext|>, which is model-specific): refused rather than failed inside Triton.
        for index, text in enumerate([value] if isinstance(value, str) else value):
            if not text:
                raise FieldError("prompt" if isinstance(value, str) else f"prompt.{index}",
                                 "prompt must not be an empty string")
        return value

    @model_validator(mode="after")
    def _best_of(self):
        if self.best_of is not None and self.best_of != self.n:
            raise UnsupportedField("best_of")  # only best_of == n, which is plain n
        return self

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class Completion(BaseModel):
    """A completion, or one SSE event of a streamed one (same object; `usage` on the last with include_usage)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None
