"""Base classes shared by every endpoint's protocol.

Requests are strict, as OpenAI's API is: a JSON string is never coerced to a boolean or a number
(`"stream": "yes"` and `"n": "1"` are refused); integers are accepted where numbers are (`temperature: 1`).
Every string in a request is checked for unpaired UTF-16 surrogates (`"\\ud800"` is valid JSON but not
text): one would fail later, when encoded for Triton or for the response.
"""

from __future__ import annotations

import logging
import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

log = logging.getLogger(__name__)

_SURROGATE = re.compile("[\ud800-\udfff]")


class FieldError(ValueError):
    """A request field is wrong, in a way the field's own type cannot say; `field` becomes the error's param."""

    code: str | None = None

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field


class UnsupportedField(FieldError):
    """An OpenAI parameter this server does not implement (yet)."""

    code = "unsupported_parameter"

    def __init__(self, field: str):
        super().__init__(field, f"`{field}` is not supported by this server")


def surrogate_path(value: Any, path: str = "") -> str | None:
    """The dotted path (`messages.0.content`) of the first string in `value` (dict keys included) holding an
    unpaired surrogate; "" for the top level; None when every string is valid Unicode."""
    if isinstance(value, str):
        return path if not value.isascii() and _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and surrogate_path(key) is not None:
                return path  # the key itself is not text: name where it is, not the key
            found = surrogate_path(item, child)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = surrogate_path(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


def unicode_problem(data: Any) -> FieldError | None:
    """The error for a request whose strings hold an unpaired surrogate (named by path), or None."""
    path = surrogate_path(data)
    if path is None:
        return None
    return FieldError(path or None, f"{path or 'the request'}: contains an unpaired surrogate (\\ud800-\\udfff), "
                                    "which is not valid Unicode text")


class Strict(BaseModel):
    """Plain request data: no type coercion."""

    model_config = ConfigDict(strict=True)


class StrictRequest(Strict):
    """A request body: strict, with every string checked for unpaired surrogates before anything else."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data):
        problem = unicode_problem(data)
        if problem is not None:
            raise problem
        return data


class OpenAIRequest(StrictRequest):
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
    """OpenAI's error envelope: every non-2xx answer of this server has this body."""

    error: ErrorDetail
