"""GET /v1/models and /v1/models/{id}."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "modelgate"
    # Extensions (vLLM reports max_model_len too); the OpenAI SDK keeps unknown fields.
    task: str
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]
