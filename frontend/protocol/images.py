"""POST /v1/images/generations, as in OpenAI's API reference, plus Stable Diffusion extension fields."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from frontend.protocol.common import OpenAIRequest


class ImageGenerationRequest(OpenAIRequest):
    prompt: str
    model: str | None = None  # default: the served images model (the first, by name, if several)
    n: int = Field(1, ge=1, le=10)
    size: str | None = None  # "WxH" from the model's sizes; None or "auto": the model's default
    response_format: Literal["url", "b64_json"] | None = None  # None: url, as OpenAI's DALL-E models
    output_format: Literal["png"] | None = None  # PNG only: a request for jpeg or webp is refused, not ignored
    # Accepted and logged; a diffusion model has no equivalent knob.
    quality: str | None = None
    style: str | None = None
    user: str | None = None
    # Extensions (the openai SDK sends them through `extra_body`).
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0, le=50)
    negative_prompt: str | None = None

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be empty")
        return value


class Image(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[Image]
    size: str | None = None
    output_format: Literal["png"] = "png"
