"""What /v1/chat/completions and /v1/completions share: sampling fields, streaming options, usage."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import BaseModel, Field, model_validator

from frontend.protocol.common import FieldError, OpenAIRequest, Strict
from triton_models.contract import MAX_CACHE_SALT_CHARS, MAX_LOGIT_BIAS, MAX_N, MAX_STOP_SEQUENCES


class StreamOptions(Strict):
    include_usage: bool = False


class GenerationRequest(OpenAIRequest):
    """Sampling fields as OpenAI defines them, plus vLLM's `top_k` and `ignore_eos` (through `extra_body`)."""

    # Unsupported fields sent with a value that means "off" (`tools: []`, `response_format: {"type": "text"}`)
    # ask for nothing this server lacks; they are dropped instead of refused.
    neutral_values: ClassVar[dict[str, tuple]] = {}

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_N)  # the chat engine's limit (triton_models/contract.py)
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    user: str | None = None
    # Extensions.
    top_k: int | None = Field(None, ge=-1)
    ignore_eos: bool = False
    # vLLM's: only requests with the same salt share cached prompt prefixes (within the caller's own key).
    cache_salt: str | None = Field(None, min_length=1, max_length=MAX_CACHE_SALT_CHARS)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(None, max_length=MAX_LOGIT_BIAS)
    # vLLM's guided decoding extensions (the engine's structured outputs); at most one, and not with a JSON
    # response_format.
    guided_json: dict | str | None = None
    guided_regex: str | None = None
    guided_choice: Annotated[list[str], Field(min_length=1)] | None = None
    guided_grammar: str | None = None

    @model_validator(mode="after")
    def _one_constraint(self):
        given = [f"guided_{k}" for k in ("json", "regex", "choice", "grammar") if getattr(self, f"guided_{k}")
                 is not None]
        response_format = getattr(self, "response_format", None)
        if response_format is not None and response_format.type != "text":
            given.append("response_format")
        if len(given) > 1:
            raise FieldError(given[1], f"give one of {', '.join(given)}, not several")
        return self

    def structured_outputs(self) -> dict | None:
        """The engine's STRUCTURED_OUTPUTS parameter for a guided_* extension (chat adds response_format)."""
        for kind in ("json", "regex", "choice", "grammar"):
            value = getattr(self, f"guided_{kind}")
            if value is not None:
                return {kind: value}
        return None

    @model_validator(mode="before")
    @classmethod
    def _drop_neutral(cls, data):
        if isinstance(data, dict):
            neutral = {k for k in cls.unsupported_fields if k in data
                       and (data[k] in (None, [], {}) or data[k] in cls.neutral_values.get(k, ()))}
            if neutral:
                data = {k: v for k, v in data.items() if k not in neutral}
        return data

    @model_validator(mode="after")
    def _stream_options(self):
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
