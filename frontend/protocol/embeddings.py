"""POST /v1/embeddings, as in OpenAI's API reference."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from frontend.protocol.common import OpenAIRequest, Usage

EmbeddingInput = str | list[str] | list[int] | list[list[int]]


class EmbeddingRequest(OpenAIRequest):
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
        for item in value:
            if (isinstance(item, str) and item == "") or (isinstance(item, list) and len(item) == 0):
                raise ValueError("input must not contain empty strings or empty token lists")
            if isinstance(item, int) and item < 0 or isinstance(item, list) and any(t < 0 for t in item):
                raise ValueError("token ids must be >= 0")
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
