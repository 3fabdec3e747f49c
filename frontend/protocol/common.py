"""Base classes shared by every endpoint's protocol."""

from __future__ import annotations

import logging
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

log = logging.getLogger(__name__)


class UnsupportedField(ValueError):
    """An OpenAI parameter this server does not implement (yet)."""

    def __init__(self, field: str):
        super().__init__(f"`{field}` is not supported by this server")
        self.field = field


class OpenAIRequest(BaseModel):
    """Unknown fields are accepted (clients send newer OpenAI fields) and logged by name, like vLLM."""

    model_config = ConfigDict(extra="allow")

    # Fields OpenAI defines that this endpoint does not support yet: refused by name, never dropped.
    unsupported_fields: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _log_unknown(self):
        if self.model_extra:
            unsupported = sorted(set(self.model_extra) & set(type(self).unsupported_fields))
            if unsupported:
                raise UnsupportedField(unsupported[0])
            log.warning("%s: ignoring unknown fields %s", type(self).__name__, sorted(self.model_extra))
        return self


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int | None = None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
