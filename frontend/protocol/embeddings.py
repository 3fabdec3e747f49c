"""POST /v1/embeddings, as in OpenAI's API reference, plus vLLM's `truncate_prompt_tokens`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from frontend.protocol.common import FieldError, OpenAIRequest, Usage

# Which ids exist depends on the model (its `vocab_size`, checked by the service); negative ones never do.
TokenId = Annotated[int, Field(ge=0)]
EmbeddingInput = str | list[str] | list[TokenId] | list[list[TokenId]]


class PromptTruncation(OpenAIRequest):
    """Requests of text encoders, with vLLM's extension (the openai SDK sends it through `extra_body`): an input
    longer than k tokens keeps its last k (vLLM truncates from the left); -1 means the model's context length.
    None: such an input is an error, as with OpenAI."""

    truncate_prompt_tokens: int | None = Field(None, ge=-1)

    @field_validator("truncate_prompt_tokens")
    @classmethod
    def _not_zero(cls, value):
        if value == 0:
            raise ValueError("truncate_prompt_tokens must be -1 (the model's context length) or at least 1")
        return value


class EmbeddingRequest(PromptTruncation):
    model: str
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value):
        if isinstance(value, str):
            value = [value]
        if len(value) == 0:
            raise ValueError("input must not be empty")
        for index, item in enumerate(value):
            if item == "" or item == []:
                raise FieldError("input", f"input {index} is empty: input must not contain empty strings or "
                                          "empty token lists")
        return value


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage
