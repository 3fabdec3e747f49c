"""GET /v1/models and /v1/models/{id}."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class LoadStatus(BaseModel):
    """Whether the model is loaded, in llama.cpp's router shape (`status.value`), which router-aware clients read;
    "unloaded" models are in the repository and load on the first request (MODELGATE_LOAD_ON_DEMAND)."""

    value: Literal["loaded", "loading", "unloading", "unloaded"]


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "modelgate"
    # Extensions (vLLM reports max_model_len too); the OpenAI SDK keeps unknown fields.
    task: str
    max_model_len: int | None = None
    status: LoadStatus
    # What a client cannot learn otherwise without a refused request (the playground reads them): chat models
    # say whether they take image_url parts; images models the sizes they draw, images per request, and edits.
    supports_images: bool | None = None
    sizes: list[str] | None = None
    max_n: int | None = None
    supports_edits: bool | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]
