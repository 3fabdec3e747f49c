"""The images endpoints, as in OpenAI's API reference, plus Stable Diffusion extension fields.

POST /v1/images/generations takes JSON; /v1/images/edits and /v1/images/variations take multipart/form-data
(the openai SDK's `images.edit` and `images.create_variation`), where every value arrives as text: their models
parse numbers and booleans from it, and take files only where OpenAI sends files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import core_schema

from frontend.protocol.common import FieldError, OpenAIRequest


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart body, read whole (the body size limit bounds it)."""

    filename: str
    data: bytes

    @classmethod
    def __get_pydantic_core_schema__(cls, source, handler):
        return core_schema.no_info_plain_validator_function(_one_file)

    @classmethod
    def __get_pydantic_json_schema__(cls, schema, handler):
        return {"type": "string", "format": "binary"}


def _one_file(value: Any) -> UploadedFile:
    if isinstance(value, list) and len(value) == 1:  # the SDK sends a list of images as `image[]`
        value = value[0]
    if isinstance(value, list):
        raise FieldError(None, f"this server edits one image per request, got {len(value)}")
    if not isinstance(value, UploadedFile):
        raise FieldError(None, "must be a file (a multipart/form-data part with a filename)")
    return value


def form_values(parts: list[tuple[str, str | UploadedFile]]) -> dict[str, Any]:
    """A multipart body's parts as request fields. `image[]` (a list in the SDK) is `image`; `svg[key]` (an
    object in the SDK) is `svg`, so that unsupported and unknown fields are named as OpenAI names them; a field
    given twice holds a list, which only a file field may unwrap."""
    values: dict[str, Any] = {}
    for name, value in parts:
        key = name.split("[", 1)[0] or name
        if key in values:
            previous = values[key]
            values[key] = [*(previous if isinstance(previous, list) else [previous]), value]
        else:
            values[key] = [value] if name.endswith("[]") else value
    return values


class BaseImageRequest(OpenAIRequest):
    """What every images endpoint takes: OpenAI's common fields and our extensions (`extra_body` in the SDK)."""

    model: str | None = None  # default: the served images model (the first, by name, if several)
    n: int = Field(1, ge=1, le=10)
    size: str | None = None  # "WxH" from the model's sizes; None or "auto": the model's default
    response_format: Literal["url", "b64_json"] | None = None  # None: url, as OpenAI's DALL-E models
    user: str | None = None  # accepted and logged
    # Extensions.
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0, le=50)
    negative_prompt: str | None = None


def _prompt_not_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("prompt must not be empty")
    return value


class ImageGenerationRequest(BaseImageRequest):
    prompt: str
    output_format: Literal["png"] | None = None  # PNG only: a request for jpeg or webp is refused, not ignored
    # Accepted and logged; a diffusion model has no equivalent knob.
    quality: str | None = None
    style: str | None = None

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        return _prompt_not_empty(value)


class ImageUploadRequest(BaseImageRequest):
    """The endpoints that start from an uploaded image. Multipart values are text: numbers and booleans are
    parsed from it ("2", "false"), unlike JSON bodies."""

    model_config = ConfigDict(strict=False, extra="allow")

    image: UploadedFile
    # Extension: the fraction of the schedule redrawn (diffusers' `strength`); defaults in triton_models.contract.
    strength: float | None = Field(None, gt=0, le=1)


class ImageVariationRequest(ImageUploadRequest):
    """POST /v1/images/variations: the image redrawn with no prompt (see frontend/services/images.py)."""


class ImageEditRequest(ImageUploadRequest):
    """POST /v1/images/edits: `image` redrawn after `prompt`, where `mask` (or the image's own transparency)
    says; the whole image without one."""

    # OpenAI fields this server cannot honour: refused by name (GPT Image's streaming, fidelity, compression of
    # formats we do not write, animation and vector output).
    unsupported_fields: ClassVar[tuple[str, ...]] = (
        "input_fidelity", "output_compression", "partial_images", "complexity", "frame_count",
        "frame_duration_ms", "markup", "svg")

    prompt: str
    mask: UploadedFile | None = None
    output_format: Literal["png"] | None = None
    background: str | None = None  # auto or opaque: what we draw; transparent is refused
    stream: bool | None = None  # false only
    # Accepted and logged.
    quality: str | None = None
    safety_identifier: str | None = None

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        return _prompt_not_empty(value)

    @field_validator("background")
    @classmethod
    def _opaque(cls, value: str | None) -> str | None:
        if value not in (None, "auto", "opaque"):
            raise FieldError("background", f"background `{value}` is not supported: this server draws opaque "
                                           "images (use `auto` or `opaque`)")
        return value

    @field_validator("stream")
    @classmethod
    def _not_streamed(cls, value: bool | None) -> bool | None:
        if value:
            raise FieldError("stream", "streaming partial images is not supported; leave `stream` unset")
        return value


def form_schema(model: type[BaseModel]) -> dict:
    """The multipart/form-data request body of an operation taking `model`, for the published OpenAPI (a form
    has no null: an optional field is one left out)."""
    schema = model.model_json_schema()
    for field in schema.get("properties", {}).values():
        if field.get("default", "") is None:
            del field["default"]
        options = field.pop("anyOf", None)
        if options is not None:
            kept = [o for o in options if o.get("type") != "null"]
            field.update(kept[0] if len(kept) == 1 else {"anyOf": kept})
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


class Image(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[Image]
    size: str | None = None
    output_format: Literal["png"] = "png"
