"""/admin/models: Triton's explicit model control, as this server's own (non-OpenAI) JSON."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # our own API: a misspelt field is an error, not ignored

    model: str = Field(min_length=1)
    # Triton's model config in its JSON shape, replacing config.pbtxt for this load (e.g. instance_group).
    config: dict[str, Any] | None = None


class UnloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    unload_dependents: bool = False


class ModelStatus(BaseModel):
    name: str
    version: str | None = None
    state: str  # Triton's: READY, LOADING, UNLOADING, UNAVAILABLE
    reason: str = ""
    task: str | None = None  # the config's openai_task; None for internal models (tokenizers, encoders)


class ModelStatusList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelStatus]
